"""Money as the transform reads it (missing spellings first, then ``money``), dates and missing values."""

from __future__ import annotations

import pandas as pd
import pytest

from dingtalk_kingdee.money import format_cents, parse_money_cents
from dingtalk_kingdee.transform.values import as_text, parse_china_datetimes


def _read_money(text: object) -> tuple[pd.Series, pd.Series]:
    parsed, bad, sub_cent = parse_money_cents(as_text(pd.Series([text], dtype=object)))
    assert not sub_cent.iloc[0]
    return parsed, bad


@pytest.mark.parametrize(("text", "cents"), [
    ("580", 58000), ("1280.50", 128050), ("1,280.50", 128050), ("¥1,280.50", 128050), ("￥ 12", 1200),
    ("RMB 7.1", 710), ("100元", 10000), ("0.500", 50), ("99.9900", 9999), ("+3", 300),
    ("-5", -500), (" 1,234,567.89 ", 123456789), (580, 58000), ("1234567890123", 123456789012300),
])
def test_money_is_parsed_to_exact_cents(text: object, cents: int) -> None:
    parsed, bad = _read_money(text)
    assert parsed.iloc[0] == cents and not bad.iloc[0]


@pytest.mark.parametrize("text", ["0.005", "0.004", "99.995", "1,280.505", "¥0.001", "0.30000000000000004", 0.1 + 0.2])
def test_money_finer_than_a_cent_is_neither_rounded_nor_a_value(text: object) -> None:
    parsed, bad, sub_cent = parse_money_cents(as_text(pd.Series([text], dtype=object)))
    assert pd.isna(parsed.iloc[0]) and not bad.iloc[0] and sub_cent.iloc[0]


@pytest.mark.parametrize("text", ["abc", "1,28", "1.280,50", "12,34.5", "1 280", "580.", ".5", "--5",
                                  "12345678901234", "5e3", "¥", "NaN"])
def test_money_that_is_not_an_amount_is_bad(text: str) -> None:
    parsed, bad = _read_money(text)
    assert pd.isna(parsed.iloc[0]) and bad.iloc[0]


@pytest.mark.parametrize("text", [None, "null", "", "  "])
def test_missing_money_is_neither_a_value_nor_bad(text: object) -> None:
    parsed, bad = _read_money(text)
    assert pd.isna(parsed.iloc[0]) and not bad.iloc[0]


def test_cents_format_as_decimal_strings() -> None:
    cents = pd.Series([58000, 5, -1250, None], dtype="Int64")
    assert format_cents(cents).tolist()[:3] == ["580.00", "0.05", "-12.50"]
    assert format_cents(cents).iloc[3] is None
    assert format_cents(pd.Series([12345], dtype="Int64"), places=0).tolist() == ["123"]
    assert format_cents(pd.Series([12345], dtype="Int64"), places=3).tolist() == ["123.450"]


@pytest.mark.parametrize(("text", "china"), [
    ("2024-03-06 09:01:02", "2024-03-06 09:01:02"),       # DingTalk: China time, no offset
    ("2024-03-06", "2024-03-06 00:00:00"),
    ("2024/3/6 7:05", "2024-03-06 07:05:00"),
    ("2024-03-05T16:30:00Z", "2024-03-06 00:30:00"),      # UTC → China, next day
    ("2024-03-06T09:01:02+08:00", "2024-03-06 09:01:02"),
    ("1709686862000", "2024-03-06 09:01:02"),              # Unix ms
    ("1709686862", "2024-03-06 09:01:02"),                 # Unix s
])
def test_dates_become_china_time(text: str, china: str) -> None:
    stamps, bad = parse_china_datetimes(pd.Series([text], dtype=object))
    assert str(stamps.iloc[0]) == china and not bad.iloc[0]


@pytest.mark.parametrize("text", ["2024-02-30", "2024-13-01", "yesterday", "06/03/2024", "2024-03-06 25:00"])
def test_impossible_or_unknown_dates_are_bad(text: str) -> None:
    stamps, bad = parse_china_datetimes(pd.Series([text], dtype=object))
    assert pd.isna(stamps.iloc[0]) and bad.iloc[0]


def test_missing_spellings_become_none() -> None:
    assert as_text(pd.Series(["null", "", " x ", None, 5, "undefined"], dtype=object)).tolist() == [
        None, None, "x", None, "5", None]
