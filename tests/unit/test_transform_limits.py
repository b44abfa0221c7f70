"""Bounded parsing: a claim whose data is too deep, too big, too nested or ambiguous is rejected
``malformed_payload`` on its own, with a reason naming the claim and the field; the others map."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dingtalk_kingdee.scheme import Scheme, load_scheme
from dingtalk_kingdee.transform import transform_claims
from dingtalk_kingdee.transform.limits import MAX_TABLE_LEVELS, MAX_VALUE_CHARS
from tests.fixtures.claims.builder import claim, expense_row
from tests.fixtures.claims.hostile import levels_cell

SCHEME_FILE = Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml"


@pytest.fixture(scope="module")
def scheme() -> Scheme:
    return load_scheme(SCHEME_FILE)


def _run(scheme: Scheme, bad: dict | str) -> pd.DataFrame:
    """Transform one hostile claim beside a good one; the good one must still be a bill."""
    good = claim("good-1", "G1")
    raw = pd.DataFrame({"instance_id": ["bad-1", "good-1"], "payload": [bad, good]})
    result = transform_claims(raw, scheme)
    assert list(result.bills["instance_id"]) == ["good-1"]
    rejects = result.rejects[result.rejects["instance_id"] == "bad-1"]
    assert not rejects.empty
    return rejects


def _malformed(rejects: pd.DataFrame, *words: str) -> str:
    assert set(rejects["reason_code"]) == {"malformed_payload"}, rejects.to_dict("records")
    reason = " ".join(rejects["reason"])
    for word in words:
        assert word in reason, reason
    return reason


def _nested_table(levels: int) -> str:
    """A 报销明细 table whose row holds a table cell ``levels - 1`` deep (level 1 is 报销明细 itself)."""
    row = expense_row("100", nested=[])
    row["rowValue"].append(levels_cell(levels))
    return json.dumps([row], ensure_ascii=False)


def test_a_table_value_of_100000_nested_brackets_rejects_that_claim_only(scheme: Scheme) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    _malformed(_run(scheme, claim("bad-1", "B1", rows=deep)), "claim B1", "报销明细", "nested too deeply")


def test_a_nested_table_value_of_deep_brackets_rejects_that_claim_only(scheme: Scheme) -> None:
    rows = [expense_row("100", nested="[" * 50_000 + "]" * 50_000)]
    _malformed(_run(scheme, claim("bad-1", "B1", rows=rows)), "claim B1", "项目费用明细", "nested too deeply")


def test_a_payload_text_of_deep_brackets_is_malformed(scheme: Scheme) -> None:
    _malformed(_run(scheme, "[" * 100_000 + "]" * 100_000), "bad-1", "nested too deeply")


def test_form_component_values_text_of_deep_brackets_is_malformed(scheme: Scheme) -> None:
    bad = {**claim("bad-1", "B1"), "form_component_values": "[" * 100_000 + "]" * 100_000}
    _malformed(_run(scheme, bad), "claim B1", "nested too deeply")


def test_a_cell_value_nested_deeper_than_the_limit_is_malformed(scheme: Scheme) -> None:
    row = expense_row("100", nested=[])
    row["rowValue"].append({"componentType": "TextField", "label": "备注", "value": "x",
                            "extendValue": json.loads("[" * 500 + "]" * 500)})
    _malformed(_run(scheme, claim("bad-1", "B1", rows=[row])), "claim B1", "报销明细", "nested too deeply")


def test_table_levels_up_to_the_limit_map_and_one_more_is_malformed(scheme: Scheme) -> None:
    ok = claim("ok-1", "OK1", rows=_nested_table(MAX_TABLE_LEVELS))
    bad = claim("bad-1", "B1", rows=_nested_table(MAX_TABLE_LEVELS + 1))
    raw = pd.DataFrame({"instance_id": ["ok-1", "bad-1"], "payload": [ok, bad]})
    result = transform_claims(raw, scheme)
    assert list(result.bills["instance_id"]) == ["ok-1"]
    _malformed(result.rejects, "claim B1", f"more than {MAX_TABLE_LEVELS} table levels")


def test_a_table_value_over_the_size_limit_is_malformed(scheme: Scheme) -> None:
    big = expense_row("100", description="长" * (MAX_VALUE_CHARS + 1), nested=[])
    _malformed(_run(scheme, claim("bad-1", "B1", rows=[big])), "claim B1", "报销明细", "characters")


@pytest.mark.parametrize("repeated", [
    '"value": "100", "value": "900"',
    '"label": "报销金额(元)", "value": "100", "label": "费用明细"',
])
def test_a_repeated_json_key_in_a_table_value_is_malformed(scheme: Scheme, repeated: str) -> None:
    text = json.dumps([expense_row("100", nested=[])], ensure_ascii=False)
    text = text.replace('"label": "报销金额(元)", "key": "MoneyField_1S85G4YLMM5C0", "value": "100"',
                        repeated + ', "key": "MoneyField_1S85G4YLMM5C0"')
    assert repeated in text
    _malformed(_run(scheme, claim("bad-1", "B1", rows=text)), "claim B1", "报销明细", "repeated key")


def test_two_amount_cells_in_one_row_are_ambiguous(scheme: Scheme) -> None:
    row = expense_row("100", nested=[])
    row["rowValue"].append({"componentType": "MoneyField", "label": "报销金额(元)", "key": "MoneyField_2",
                            "value": "900.00"})
    _malformed(_run(scheme, claim("bad-1", "B1", rows=[row])), "claim B1", "报销金额(元)", "more than once")


def test_reasons_quote_at_most_60_characters_of_a_value(scheme: Scheme) -> None:
    huge = "9" * 500_000 + "x"
    reject = _run(scheme, claim("bad-1", "B1", rows=[expense_row(huge, nested=[])]))
    assert list(reject["reason_code"]) == ["amount_unparseable"]
    assert '"' + "9" * 60 + '…"' in reject["reason"].iloc[0] and len(reject["reason"].iloc[0]) < 200


def test_a_claim_named_by_a_huge_instance_id_is_named_shortly(scheme: Scheme) -> None:
    instance_id = "i" * 100_000
    raw = pd.DataFrame({"instance_id": [instance_id], "payload": [claim(instance_id, "null")]})
    reasons = transform_claims(raw, scheme).rejects["reason"]
    assert len(reasons) and all(len(r) < 200 and "i" * 60 + "…" in r for r in reasons)


def test_a_repeated_key_in_a_select_ext_value_is_malformed(scheme: Scheme) -> None:
    bad = claim("bad-1", "B1")
    for component in bad["form_component_values"]:
        if component.get("name") == "报销类别":
            component["ext_value"] = '{"label": "行政报销", "key": "option_c", "label": "项目报销"}'
    _malformed(_run(scheme, bad), "claim B1", "报销类别", "repeated key")


def test_a_multi_select_ext_value_with_many_labels_is_fine(scheme: Scheme) -> None:
    good = claim("good-2", "G2")
    good["form_component_values"].append({
        "name": "标签", "value": '["a", "b"]', "component_type": "DDMultiSelectField",
        "ext_value": json.dumps([{"label": "a", "key": "k1"}, {"label": "b", "key": "k2"}])})
    raw = pd.DataFrame({"instance_id": ["good-2"], "payload": [good]})
    assert list(transform_claims(raw, scheme).bills["instance_id"]) == ["good-2"]
