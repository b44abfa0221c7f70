"""A corpus of malformed and unpayable claims: each yields its reason code, the good ones still map."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dingtalk_kingdee.reasons import RejectReason
from dingtalk_kingdee.scheme import Scheme, load_scheme
from dingtalk_kingdee.transform import transform_claims
from tests.fixtures.claims.builder import claim, expense_row, nested_row

SCHEME_FILE = Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml"


@pytest.fixture(scope="module")
def scheme() -> Scheme:
    return load_scheme(SCHEME_FILE)


def _with_form(instance: dict, name: str, **changes: object) -> dict:
    """A copy of the instance whose form component ``name`` has ``changes`` applied (or is removed)."""
    form = []
    for component in instance["form_component_values"]:
        if component.get("name") == name:
            if changes.get("remove"):
                continue
            component = {**component, **changes}
        form.append(component)
    return {**instance, "form_component_values": form}


def _rows_cell(row: dict, label: str, **changes: object) -> dict:
    cells = []
    for cell in row["rowValue"]:
        if cell["label"] == label:
            if changes.get("remove"):
                continue
            cell = {**cell, **changes}
        cells.append(cell)
    return {**row, "rowValue": cells}


_BUILD = object()   # "build the payload from the keyword arguments"


def bad_corpus() -> list[tuple[str, object, str]]:
    """(instance_id, payload, expected reason code)."""
    def c(i: int, **kw: object) -> tuple[str, dict]:
        instance_id = f"bad-{i:02d}"
        return instance_id, claim(instance_id, f"20240305100000{i:04d}", **kw)

    cases: list[tuple[str, object, str]] = []

    def add(i: int, code: str, payload: object = _BUILD, **kw: object) -> None:
        instance_id, built = c(i, **kw)
        cases.append((instance_id, built if payload is _BUILD else payload, code))

    add(1, "malformed_payload", payload=["not", "an", "instance"])
    add(2, "malformed_payload", payload=None)
    add(3, "malformed_payload", payload='{"status": "COMPLETED", ')
    add(4, "malformed_payload", payload={k: v for k, v in claim("bad-04", "B04").items()
                                         if k != "form_component_values"})
    add(5, "malformed_payload", payload={**claim("bad-05", "B05"), "form_component_values": "[{oops"})
    add(6, "malformed_payload", payload={**claim("bad-06", "B06"), "form_component_values": ["报销明细"]})
    add(7, "malformed_payload", rows='[{"rowNumber": "r1", "rowValue": [')
    add(8, "malformed_payload", rows=[expense_row("100", nested='[{"rowValue": [}]')])
    add(9, "malformed_payload", rows='{"rowNumber": "r1"}')
    add(10, "malformed_payload", rows=json.dumps(["just text"]))
    add(11, "no_rows", rows="[]")
    add(12, "no_rows", rows=json.dumps([{"componentName": "TableField", "props": {"label": "报销明细"}}]))
    add(13, "no_rows", rows="null")
    cases.append(("bad-14", _with_form(claim("bad-14", "B14"), "报销明细", remove=True), "no_rows"))
    add(15, "amount_missing", rows=[expense_row("null", nested=[])])
    add(16, "amount_missing", rows=[_rows_cell(expense_row("100", nested=[]), "报销金额(元)", remove=True)])
    add(17, "amount_unparseable", rows=[expense_row("abc", nested=[])])
    add(18, "amount_unparseable", rows=[expense_row("1,28", nested=[])])
    add(19, "amount_unparseable", rows=[expense_row("1.280,50", nested=[])])
    add(20, "amount_not_positive", rows=[expense_row("0", nested=[])])
    add(21, "amount_not_positive", rows=[expense_row("100"), expense_row("-50", nested=[], row_number="r2")])
    add(22, "total_mismatch", rows=[expense_row("100", nested=[nested_row("60"), nested_row("50", row_number="n2")])])
    add(23, "amount_unparseable", rows=[expense_row("100", nested=[nested_row("x")])])
    add(24, "unmapped_employee", userid="newhire9001")
    add(25, "unmapped_employee", userid="contractor77")
    add(26, "unmapped_department", dept_id="9999")
    add(27, "unmapped_expense_item", expense_type="团建费")
    add(28, "unmapped_expense_item", category="项目报销", expense_type="项目招待费")
    cases.append(("bad-29", {**claim("bad-29", "x"), "business_id": "null"}, "missing_field"))
    add(30, "bad_date", finish_time="yesterday")
    add(31, "bad_date", finish_time="2024-02-30 10:00:00")
    add(32, "missing_field", finish_time="null")
    add(33, "bad_date", rows=[expense_row("100", date="2024-13-01")])
    add(34, "not_approved", status="TERMINATED", result="")
    add(35, "not_approved", status="CANCELED", result="")
    add(36, "not_approved", status="COMPLETED", result="refuse")
    # Same business_id and times as good-1; the smaller instance id (good-1) keeps it.
    cases.append(("zdup-37", claim("zdup-37", "202403050000000001"), "duplicate_business_id"))
    add(38, "duplicate_business_id", payload=claim("bad-38", "202403059999999999"))
    cases.append(("bad-39", {k: v for k, v in claim("bad-39", "B39").items() if k != "status"}, "unknown_status"))
    add(40, "malformed_payload", rows=[{"rowNumber": "r1", "rowValue": ["报销金额(元)", 100]}])
    cases.append(("bad-41", {**claim("bad-41", "B41"), "originator_userid": ""}, "missing_field"))
    add(42, "amount_not_positive", rows=[expense_row("¥-0.00", nested=[])])
    return cases


GOOD = [
    claim("good-1", "202403050000000001", rows=[expense_row("580"), expense_row("1,280.50", row_number="r2")]),
    claim("good-2", "202403050000000002", userid="016400158382", dept_id="1003", category="项目报销",
          expense_type="项目外包费", rows=[expense_row("¥3,000.00", nested=[nested_row("1000"),
                                                                        nested_row("2000", row_number="n2")])]),
    claim("good-3", "202403050000000003", rows=[expense_row("99.9", nested="[]")]),
]
WAITING = [claim("wait-1", "W1", status="RUNNING", result=""), claim("wait-2", "W2", status="NEW", result="")]


def test_every_bad_claim_gets_its_reason_and_good_claims_still_map(scheme: Scheme) -> None:
    corpus = bad_corpus()
    assert len(corpus) >= 30
    raw = pd.DataFrame({
        "instance_id": [c[0] for c in corpus] + [g["process_instance_id"] for g in GOOD + WAITING],
        "payload": [c[1] for c in corpus] + GOOD + WAITING,
    })
    result = transform_claims(raw, scheme, already_billed={"202403059999999999": "some-earlier-instance"})

    codes = result.rejects.groupby("instance_id")["reason_code"].agg(set).to_dict()
    for instance_id, _, expected in corpus:
        assert codes.get(instance_id) == {expected}, (instance_id, result.rejects[
            result.rejects["instance_id"] == instance_id].to_dict("records"))
    assert set(result.rejects["reason_code"]) <= set(RejectReason)
    assert sorted(result.bills["instance_id"]) == ["good-1", "good-2", "good-3"]
    assert sorted(result.waiting["instance_id"]) == ["wait-1", "wait-2"]
    amounts = dict(zip(result.bills["instance_id"], result.bills["amount"], strict=True))
    assert str(amounts["good-1"]) == "1860.50"
    assert str(amounts["good-2"]) == "3000.00"
    assert str(amounts["good-3"]) == "99.90"


def test_reasons_name_the_claim_the_row_and_the_value(scheme: Scheme) -> None:
    raw = pd.DataFrame({"instance_id": ["a", "b", "c"], "payload": [
        claim("a", "202403051012000123456", rows=[expense_row("10"), expense_row("abc", nested=[], row_number="r2")]),
        claim("b", "202403051012000123457", userid="newhire9001"),
        claim("c", "202403051012000123458", rows=[expense_row("100", nested=[nested_row("30"),
                                                                          nested_row("30", row_number="n2")])]),
    ]})
    rejects = transform_claims(raw, scheme).rejects.set_index("instance_id")
    assert rejects.loc["a", "reason"] == ('claim 202403051012000123456: 报销明细 row 2: '
                                          '报销金额(元) "abc" is not an amount')
    assert rejects.loc["a", "field"] == "报销明细.报销金额(元)"
    b = rejects.loc[["b"]]
    assert set(b["field"]) == {"FCONTACTUNIT", "FRECTUNIT", "FOPPOSITECCOUNTNAME"}
    assert all('"newhire9001"' in r and "202403051012000123457" in r for r in b["reason"])
    assert rejects.loc["c", "reason"] == ("claim 202403051012000123458: 报销明细 row 1: 项目费用明细 总金额 adds up to "
                                          "60.00 but 报销金额(元) is 100.00")


def test_one_claim_may_have_several_reject_rows_and_is_then_no_bill(scheme: Scheme) -> None:
    payload = claim("m", "M1", userid="newhire9001", dept_id="9999", expense_type="团建费",
                    rows=[expense_row("abc", nested=[])])
    result = transform_claims(pd.DataFrame({"instance_id": ["m"], "payload": [payload]}), scheme)
    assert set(result.rejects["reason_code"]) == {"unmapped_employee", "unmapped_department",
                                                  "unmapped_expense_item", "amount_unparseable"}
    assert result.bills.empty and result.waiting.empty


def test_duplicate_business_id_keeps_the_claim_created_first(scheme: Scheme) -> None:
    early = {**claim("z-2", "SAME"), "create_time": "2024-03-01 08:00:00"}
    late = {**claim("a-1", "SAME"), "create_time": "2024-03-02 08:00:00"}
    result = transform_claims(pd.DataFrame({"instance_id": ["a-1", "z-2"], "payload": [late, early]}), scheme)
    assert list(result.bills["instance_id"]) == ["z-2"]
    assert list(result.rejects["instance_id"]) == ["a-1"]
    assert "z-2" in result.rejects["reason"].iloc[0]


def test_duplicate_business_id_ties_go_to_the_smallest_instance_id(scheme: Scheme) -> None:
    raw = pd.DataFrame({"instance_id": ["z-2", "a-1"], "payload": [claim("z-2", "SAME"), claim("a-1", "SAME")]})
    result = transform_claims(raw, scheme)
    assert list(result.bills["instance_id"]) == ["a-1"]
    assert list(result.rejects["instance_id"]) == ["z-2"]


def test_already_billed_under_the_same_instance_maps_again(scheme: Scheme) -> None:
    raw = pd.DataFrame({"instance_id": ["i"], "payload": [claim("i", "BILLED")]})
    assert len(transform_claims(raw, scheme, already_billed={"BILLED": "i"}).bills) == 1
    clash = transform_claims(raw, scheme, already_billed={"BILLED": "other"})
    assert list(clash.rejects["reason_code"]) == ["duplicate_business_id"]


def test_repeated_instance_rows_are_one_claim(scheme: Scheme) -> None:
    raw = pd.DataFrame({"instance_id": ["i", "i"],
                        "payload": [claim("i", "B", status="RUNNING", result=""), claim("i", "B")]})
    result = transform_claims(raw, scheme)
    assert list(result.bills["instance_id"]) == ["i"] and result.waiting.empty


def test_empty_batch(scheme: Scheme) -> None:
    result = transform_claims(pd.DataFrame({"instance_id": [], "payload": []}), scheme)
    assert result.bills.empty and result.rejects.empty and result.waiting.empty
    assert list(result.bills.columns) == ["instance_id", "business_id", "match_value", "amount", "payee", "model"]


def test_every_bad_nested_amount_is_named_with_its_rows(scheme: Scheme) -> None:
    payload = claim("n", "N1", rows=[
        expense_row("100", nested=[nested_row("x"), nested_row("y", row_number="n2")]),
        expense_row("5", nested=[nested_row("z", row_number="n3")], row_number="r2")])
    result = transform_claims(pd.DataFrame({"instance_id": ["n"], "payload": [payload]}), scheme)
    assert list(result.rejects["reason"]) == [
        'claim N1: 报销明细 row 1 / 项目费用明细 row 1: 总金额 "x" is not an amount',
        'claim N1: 报销明细 row 1 / 项目费用明细 row 2: 总金额 "y" is not an amount',
        'claim N1: 报销明细 row 2 / 项目费用明细 row 1: 总金额 "z" is not an amount']
    assert set(result.rejects["field"]) == {"报销明细.项目费用明细.总金额"}
