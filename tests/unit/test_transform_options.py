"""Optional scheme rules and mapping options: form total, claim limit, join, ext paths, formats."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dingtalk_kingdee.scheme import Scheme, load_scheme
from dingtalk_kingdee.transform import transform_claims
from tests.fixtures.claims.builder import claim, expense_row, nested_row

DEFAULT = Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml"


def _scheme(tmp_path: Path, change) -> Scheme:
    data = yaml.safe_load(DEFAULT.read_text(encoding="utf-8"))
    change(data)
    # Inline value maps keep the variant self-contained (no CSV folder needed).
    base = load_scheme(DEFAULT)
    data["value_maps"] = {name: {"values": base.value_map(name), "reject_code": spec.reject_code}
                          for name, spec in base.value_maps.items()}
    file = tmp_path / "variant.yaml"
    file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_scheme(file)


def _run(scheme: Scheme, *payloads: dict) -> pd.DataFrame:
    raw = pd.DataFrame({"instance_id": [p["process_instance_id"] for p in payloads], "payload": list(payloads)})
    return transform_claims(raw, scheme)


def _with_total(payload: dict, total: str) -> dict:
    component = {"name": "报销总额", "value": total, "id": "MoneyField_TOTAL", "component_type": "MoneyField",
                 "ext_value": json.dumps({"upper": "", "componentName": "MoneyField"})}
    return {**payload, "form_component_values": [*payload["form_component_values"], component]}


def test_form_total_must_equal_the_rows(tmp_path: Path) -> None:
    scheme = _scheme(tmp_path, lambda d: d["rejects"].__setitem__("form_total", "报销总额"))
    rows = [expense_row("580"), expense_row("20", row_number="r2")]
    good = _with_total(claim("ok", "OK", rows=rows), "600.00")
    off = _with_total(claim("off", "OFF", rows=rows), "650")
    bad = _with_total(claim("bad", "BAD", rows=rows), "六百")
    result = _run(scheme, good, off, bad)
    assert list(result.bills["instance_id"]) == ["ok"]
    rejects = result.rejects.set_index("instance_id")
    assert rejects.loc["off", "reason_code"] == "total_mismatch"
    assert rejects.loc["off", "reason"] == "claim OFF: 报销总额 is 650.00 but the 报销明细 rows add up to 600.00"
    assert rejects.loc["bad", "reason_code"] == "amount_unparseable"


def test_claim_limit(tmp_path: Path) -> None:
    scheme = _scheme(tmp_path, lambda d: d["rejects"].__setitem__("max_amount_per_claim", "1000"))
    result = _run(scheme, claim("small", "S", rows=[expense_row("1000")]),
                  claim("big", "L", rows=[expense_row("600"), expense_row("400.01", row_number="r2")]))
    assert list(result.bills["instance_id"]) == ["small"]
    assert list(result.rejects["reason_code"]) == ["amount_too_large"]
    assert "1000.01" in result.rejects["reason"].iloc[0]


def test_nested_checks_can_be_switched_off(tmp_path: Path) -> None:
    scheme = _scheme(tmp_path, lambda d: d["rejects"].__setitem__("nested_total_check", False))
    result = _run(scheme, claim("n", "N", rows=[expense_row("100", nested=[nested_row("60")])]))
    assert list(result.bills["instance_id"]) == ["n"] and result.bills["amount"].iloc[0] == Decimal("100.00")


def test_join_ext_paths_formats_and_fixed_comment_user(tmp_path: Path) -> None:
    def change(d: dict) -> None:
        d["mapping"]["entry"]["FOPPOSITEBANKACCOUNT"] = {"source": "nested.项目费用明细.收款账号", "agg": "join"}
        d["mapping"]["header"]["FREMARK"] = {"template": "{form.报销类别.ext.key} {instance.create_time:date}"}
        d["mapping"]["header"]["FDATE"] = {"source": "instance.finish_time", "type": "date",
                                           "format": "yyyy-MM-dd HH:mm:ss"}
        d["mapping"]["entry"]["FPRICE"] = {"source": "row.报销金额(元)", "type": "amount", "format": 0}
        d["write_back"] = {"comment_user": "fixed", "comment_userid": "finance01",
                           "comment_text": "{business_id} → {bill_number}"}
    scheme = _scheme(tmp_path, change)
    payload = claim("j", "J", rows=[expense_row("100.50", nested=[
        nested_row("50.25", account="A-1", row_number="n1"), nested_row("50.25", account="A-2", row_number="n2"),
        nested_row(None, account="A-1", row_number="n3")])])
    model = _run(scheme, payload).bills["model"].iloc[0]
    assert model["FPAYBILLENTRY"][0]["FOPPOSITEBANKACCOUNT"] == "A-1; A-2"
    assert model["FREMARK"] == "option_c 2024-03-05"
    assert model["FDATE"] == "2024-03-06 09:01:02"
    assert model["FPAYBILLENTRY"][0]["FPRICE"] == "101"     # half-up to 0 places
    assert scheme.write_back.comment_user_for("manager4500") == "finance01"
    assert scheme.write_back.render_comment(business_id="J", bill_number="FKD1") == "J → FKD1"


@pytest.mark.parametrize("field", ["FCOMMENT", "FREMARK"])
def test_unrequired_empty_fields_are_left_out(tmp_path: Path, field: str) -> None:
    def change(d: dict) -> None:
        d["mapping"]["entry"]["FCOMMENT"] = {"source": "row.费用明细"}
        d["mapping"]["header"]["FREMARK"] = {"source": "form.不存在的字段"}
    scheme = _scheme(tmp_path, change)
    model = _run(scheme, claim("e", "E", rows=[expense_row("1", description="null")])).bills["model"].iloc[0]
    assert field not in model and field not in model["FPAYBILLENTRY"][0]


def test_other_component_types_are_carried_without_harm() -> None:
    scheme = load_scheme(DEFAULT)
    extra = [
        {"name": "同行人", "value": "李四", "id": "InnerContactField_1", "component_type": "InnerContactField",
         "ext_value": json.dumps([{"emplId": "0456", "name": "李四"}], ensure_ascii=False)},
        {"name": "标签", "value": '["A","B"]', "id": "DDMultiSelectField_1", "component_type": "DDMultiSelectField",
         "ext_value": json.dumps([{"label": "A", "key": "a"}, {"label": "B", "key": "b"}])},
        {"name": '["开始时间","结束时间"]', "value": '["2024-02-25","2024-02-26",null]', "id": "DDDateRangeField_1",
         "component_type": "DDDateRangeField"},
        {"name": "附件", "value": json.dumps([{"spaceId": "1", "fileName": "a.pdf", "fileSize": 10,
                                                "fileType": "pdf", "fileId": "f"}]),
         "id": "DDAttachment_1", "component_type": "DDAttachment"},
        {"name": "金额合计", "value": "580", "id": "MoneyField_2", "component_type": "MoneyField",
         "ext_value": "not json {"},
    ]
    payload = claim("o", "O")
    payload = {**payload, "form_component_values": [*payload["form_component_values"], *extra]}
    result = _run(scheme, payload)
    assert list(result.bills["instance_id"]) == ["o"]
    frame = result.claims.set_index("instance_id")
    assert frame.loc["o", "form.同行人"] == "李四"
    assert frame.loc["o", "form.同行人.ext"] == [{"emplId": "0456", "name": "李四"}]
    assert frame.loc["o", "form.金额合计"] == "580"


def test_nested_ext_paths_in_header_and_entry(tmp_path: Path) -> None:
    def change(d: dict) -> None:
        d["mapping"]["header"]["FREMARK"] = {
            "template": "{nested.项目费用明细.公司帐号付款(如需公司帐号付款请选择).ext.key}"}
        d["mapping"]["entry"]["FCOMMENT"] = {"source": "nested.项目费用明细.公司帐号付款(如需公司帐号付款请选择)",
                                             "agg": "join"}
    scheme = _scheme(tmp_path, change)
    model = _run(scheme, claim("x", "X")).bills["model"].iloc[0]
    assert model["FREMARK"] == "option_1"
    assert model["FPAYBILLENTRY"][0]["FCOMMENT"] == "否"
