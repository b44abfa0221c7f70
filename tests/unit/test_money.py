"""The money module on its own: text → cents, Decimal ↔ cents, cents → text, all exact."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dingtalk_kingdee.money import format_cents, from_cents, parse_money_cents, to_cents

CENTS = st.integers(min_value=-(10**15 - 1), max_value=10**15 - 1)   # up to 13 integer digits


@pytest.mark.parametrize(("text", "cents"), [
    (" 1,234,567.89 ", 123456789), ("¥ 12", 1200), (580, 58000), (12.5, 1250), ("100元 ", 10000)])
def test_money_texts_and_numbers_are_read_without_the_transform(text: object, cents: int) -> None:
    parsed, bad, _ = parse_money_cents(pd.Series([text], dtype=object))
    assert parsed.iloc[0] == cents and not bad.iloc[0]


def test_missing_is_none_or_nan_and_a_source_spelling_of_missing_is_not_money() -> None:
    parsed, bad, _ = parse_money_cents(pd.Series([None, float("nan"), "null"], dtype=object))
    assert parsed.isna().all()
    assert bad.tolist() == [False, False, True]


@given(CENTS)
def test_cents_round_trip_through_decimal_and_text(cents: int) -> None:
    amount = from_cents(cents)
    assert to_cents(amount) == cents and amount.as_tuple().exponent == -2
    [text] = format_cents(pd.Series([cents], dtype="Int64")).tolist()
    assert Decimal(text) == amount and text == str(amount)
    parsed, bad, _ = parse_money_cents(pd.Series([text], dtype=object))
    assert parsed.iloc[0] == cents and not bad.iloc[0]


@given(CENTS, st.integers(min_value=0, max_value=4))
def test_other_decimal_places_are_the_decimal_rounded_half_up(cents: int, places: int) -> None:
    [text] = format_cents(pd.Series([cents], dtype="Int64"), places=places).tolist()
    expected = from_cents(cents).quantize(Decimal(1).scaleb(-places), rounding="ROUND_HALF_UP")
    assert text == str(expected)


def test_an_amount_finer_than_a_cent_is_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="more than two decimal places"):
        to_cents(Decimal("1.005"))
    assert from_cents(None) == Decimal("0.00")
