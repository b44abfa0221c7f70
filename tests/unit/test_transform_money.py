"""Money in the transform: never rounded, capped per claim by default, summed exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from dingtalk_kingdee.scheme import DEFAULT_MAX_AMOUNT_PER_CLAIM, Scheme, load_scheme
from dingtalk_kingdee.transform import transform_claims
from tests.fixtures.claims.builder import claim, expense_row, nested_row
from tests.unit.test_transform_options import _scheme

SCHEME_FILE = Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml"


@pytest.fixture(scope="module")
def scheme() -> Scheme:
    return load_scheme(SCHEME_FILE)


def _run(scheme: Scheme, *payloads: dict) -> pd.DataFrame:
    raw = pd.DataFrame({"instance_id": [p["process_instance_id"] for p in payloads], "payload": list(payloads)})
    return transform_claims(raw, scheme)


def _only_reject(result, instance_id: str) -> dict:
    rows = result.rejects[result.rejects["instance_id"] == instance_id].to_dict("records")
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("amount", ["0.005", "1280.505", "1,280.505", "¥12.001", 0.30000000000000004])
def test_an_amount_finer_than_a_cent_rejects_the_claim_and_is_never_rounded(scheme: Scheme, amount) -> None:
    result = _run(scheme, claim("sub", "SUB", rows=[expense_row(amount, nested=[])]), claim("ok", "OK"))
    assert list(result.bills["instance_id"]) == ["ok"]
    reject = _only_reject(result, "sub")
    assert reject["reason_code"] == "amount_precision"
    assert "claim SUB" in reject["reason"] and "报销金额(元)" in reject["reason"] and str(amount) in reject["reason"]


def test_a_nested_amount_finer_than_a_cent_is_refused_too(scheme: Scheme) -> None:
    result = _run(scheme, claim("sub", "SUB", rows=[expense_row("100", nested=[nested_row("99.995"),
                                                                              nested_row("0.005", row_number="n2")])]))
    assert set(result.rejects["reason_code"]) == {"amount_precision"} and result.bills.empty


def test_zeros_beyond_the_cent_are_exact_and_accepted(scheme: Scheme) -> None:
    result = _run(scheme, claim("z", "Z", rows=[expense_row("1280.500", nested=[])]))
    assert result.bills["amount"].tolist() == [Decimal("1280.50")]


def test_the_default_scheme_caps_a_claim_at_the_default(scheme: Scheme) -> None:
    assert scheme.rejects.max_amount_per_claim == DEFAULT_MAX_AMOUNT_PER_CLAIM == Decimal("1000000.00")
    at_cap = claim("cap", "CAP", rows=[expense_row("600000.00"), expense_row("400000.00", row_number="r2")])
    over = claim("over", "OVER", rows=[expense_row("600000.00"), expense_row("400000.01", row_number="r2")])
    result = _run(scheme, at_cap, over)
    assert list(result.bills["instance_id"]) == ["cap"]
    assert _only_reject(result, "over")["reason_code"] == "amount_too_large"


def test_a_scheme_without_a_cap_gets_the_default(tmp_path: Path) -> None:
    variant = _scheme(tmp_path, lambda d: d["rejects"].pop("max_amount_per_claim", None))
    assert variant.rejects.max_amount_per_claim == DEFAULT_MAX_AMOUNT_PER_CLAIM


def test_totals_beyond_64_bit_cents_are_exact_and_over_the_cap(tmp_path: Path) -> None:
    """10,000 rows of 9,999,999,999,999.99: the sum overflows int64 cents; it must stay exact."""
    variant = _scheme(tmp_path, lambda d: d["rejects"].__setitem__("max_amount_per_claim", None))
    assert variant.rejects.max_amount_per_claim is None
    row = {"rowValue": [{"label": "报销金额(元)", "componentType": "MoneyField", "value": "9999999999999.99"},
                        {"label": "费用发生日期", "value": "2024-03-01"}]}
    rows = json.dumps([row] * 10_000, ensure_ascii=False)
    result = _run(variant, claim("huge", "HUGE", rows=rows))
    assert result.bills["amount"].tolist() == [Decimal("99999999999999900.00")]
    capped = _run(load_scheme(SCHEME_FILE), claim("huge", "HUGE", rows=rows))
    reject = _only_reject(capped, "huge")
    assert reject["reason_code"] == "amount_too_large" and "99999999999999900.00" in reject["reason"]


def test_a_float_amount_in_the_json_is_read_by_its_shortest_text(scheme: Scheme) -> None:
    row = {"rowValue": [{"label": "报销金额(元)", "componentType": "MoneyField", "value": 0.3},
                        {"label": "费用发生日期", "componentType": "DDDateField", "value": "2024-03-01"}]}
    rows = json.dumps([row])
    result = _run(scheme, claim("f", "F", rows=rows))
    assert result.bills["amount"].tolist() == [Decimal("0.30")]
