"""Expense-item keys from stored claims (pure): rendered as the scheme's mapping builds them."""

from __future__ import annotations

from pathlib import Path

from dingtalk_kingdee.scheme import FieldMapping, load_scheme
from dingtalk_kingdee.valuemaps.options import option_keys

SCHEME = load_scheme(Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml")


def claim(category: str, admin: str = "null", project: str = "null") -> dict:
    return {"form_component_values": [
        {"name": "报销类别", "value": category}, {"name": "行政报销类型", "value": admin},
        {"name": "项目报销类型", "value": project}]}


def test_keys_follow_the_template_and_its_alternatives() -> None:
    claims = [claim("行政报销", admin="差旅费"), claim("项目报销", project=" 项目会议费 "),
              claim("行政报销", admin="差旅费"), claim("行政报销"), {"form_component_values": []}]
    assert option_keys(SCHEME, "expense_items", claims) == ["行政报销/差旅费", "项目报销/项目会议费"]
    assert option_keys(SCHEME, "departments", claims) == []  # from instance.originator_dept_id: none here


def test_a_key_built_from_table_rows_is_not_rendered() -> None:
    entry = {**SCHEME.mapping.entry, "FCOSTID": FieldMapping(template="{row.费用明细}", map="expense_items")}
    by_row = SCHEME.model_copy(update={"mapping": SCHEME.mapping.model_copy(update={"entry": entry})})
    assert option_keys(by_row, "expense_items", [claim("行政报销", admin="差旅费")]) == []
