"""Scheme loading: the default scheme matches the demo universe; every fault names file and key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dingtalk_kingdee.errors import SchemeError
from dingtalk_kingdee.scheme import load_scheme, load_schemes, parse_source_path, parse_template

ROOT = Path(__file__).resolve().parents[2]
SCHEMES = ROOT / "include" / "schemes"
DEFAULT = SCHEMES / "expense_to_paybill.yaml"
UNIVERSE = json.loads((ROOT / "include" / "demo" / "universe.json").read_text(encoding="utf-8"))


def test_default_scheme_loads_with_its_documented_settings() -> None:
    [scheme] = load_schemes(SCHEMES)
    assert scheme.id == "expense_to_paybill"
    assert scheme.source.process_code == "PROC-EXPENSE-DEMO"
    assert scheme.source.dingtalk_conn_id == "dingtalk_default"
    assert scheme.target.kingdee_conn_id == "kingdee_default"
    assert scheme.source.lookback_days == 30
    assert scheme.source.approved.status == ["COMPLETED"] and scheme.source.approved.result == ["agree"]
    assert scheme.target.form_id == "AP_PAYBILL" and scheme.target.match_field == "FTHIRDBILLNO"
    assert scheme.batch_save_options()["IsAutoSubmitAndAudit"] is False
    assert scheme.write_back.comment_user_for("manager4500") == "manager4500"
    assert "FKD001" in scheme.write_back.render_comment(bill_number="FKD001", business_id="B1")


def test_value_maps_are_exactly_the_mapped_universe() -> None:
    scheme = load_scheme(DEFAULT)
    assert scheme.value_map("employees") == {e["userid"]: e["kingdee_number"] for e in UNIVERSE["employees"]}
    assert scheme.value_map("employee_names") == {e["userid"]: e["name"] for e in UNIVERSE["employees"]}
    assert scheme.value_map("departments") == {d["dept_id"]: d["kingdee_number"] for d in UNIVERSE["departments"]}
    assert scheme.value_map("expense_items") == {
        f"{category}/{name}": number
        for category, spec in UNIVERSE["categories"].items() for name, number in spec["types"].items()}
    for user in UNIVERSE["unmapped_employees"]:
        assert user["userid"] not in scheme.value_map("employees")
    for category, types in UNIVERSE["unmapped_types"].items():
        for name in types:
            assert f"{category}/{name}" not in scheme.value_map("expense_items")


def test_constants_come_from_the_universe_and_every_reference_field_is_mapped() -> None:
    scheme = load_scheme(DEFAULT)
    header, entry = scheme.mapping.header, scheme.mapping.entry
    kingdee = UNIVERSE["kingdee"]
    assert header["FBillTypeID"].const == kingdee["bill_type"]
    assert header["FPAYORGID"].const == header["FSETTLEORGID"].const == kingdee["org_number"]
    assert header["FCURRENCYID"].const == header["FSETTLECUR"].const == kingdee["currency"]
    assert entry["FSETTLETYPEID"].const == kingdee["settle_type"]
    assert entry["FPURPOSEID"].const == kingdee["purpose"]
    for field in ("FBillNo", "FBillTypeID", "FDATE", "FSETTLEORGID", "FPAYORGID", "FCURRENCYID", "FCONTACTUNITTYPE",
                  "FCONTACTUNIT", "FRECTUNITTYPE", "FRECTUNIT", "FSETTLECUR", "FREMARK", "FDepartment",
                  "FTHIRDBILLNO"):
        assert field in header, field
    for field in ("FSETTLETYPEID", "FPURPOSEID", "FPAYTOTALAMOUNTFOR", "FCOSTID", "FCOMMENT", "FPRICE", "FQTY"):
        assert field in entry, field


def test_source_paths_and_templates_parse() -> None:
    assert str(parse_source_path("form.报销类别.ext.label")) == "form.报销类别.ext.label"
    nested = parse_source_path("nested.项目费用明细.收款账号")
    assert (nested.table, nested.label, nested.column) == ("项目费用明细", "收款账号", "nested.项目费用明细.收款账号")
    parts = parse_template("{form.报销类别}/{form.行政报销类型|form.项目报销类型} {row.费用发生日期:date}")
    assert parts[1] == "/" and len(parts[2].alternatives) == 2 and parts[4].as_date
    with pytest.raises(ValueError, match="not a source path"):
        parse_source_path("报销类别")


# ------------------------------------------------------------------------------------------- faults

@pytest.fixture
def scheme_dir(tmp_path: Path) -> Path:
    """A copy of the default scheme and its value maps that a test may spoil."""
    shutil.copy(DEFAULT, tmp_path / DEFAULT.name)
    shutil.copytree(SCHEMES / "expense_to_paybill", tmp_path / "expense_to_paybill")
    return tmp_path


def _spoil(folder: Path, change: Any) -> Path:
    file = folder / DEFAULT.name
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    change(data)
    file.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return file


def _fault(file: Path) -> str:
    with pytest.raises(SchemeError) as caught:
        load_scheme(file)
    message = str(caught.value)
    assert str(file) in message
    return message


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d.__setitem__("mappings", d.pop("mapping")), "mapping: Field required"),
    (lambda d: d["mapping"]["entry"]["FCOSTID"].__setitem__("lookup", "x"), "mapping.entry.FCOSTID.lookup"),
    (lambda d: d["mapping"]["entry"]["FCOSTID"].__setitem__("map", "cost_items"),
     'mapping.entry.FCOSTID.map: unknown value map "cost_items"'),
    (lambda d: d.__setitem__("id", "Expense-To-Paybill"), "id: String should match pattern"),
    (lambda d: d["mapping"]["header"]["FDATE"].__setitem__("const", "2024-01-01"),
     "mapping.header.FDATE: Value error, give exactly one of const, source, template"),
    (lambda d: d["mapping"]["header"]["FBillNo"].__setitem__("source", "business_id"),
     "mapping.header.FBillNo.source"),
    (lambda d: d["mapping"]["header"]["FREMARK"].__setitem__("template", "{row.费用明细}"),
     "mapping.header.FREMARK.template"),
    (lambda d: d["mapping"]["entry"]["FOPPOSITEBANKACCOUNT"].__setitem__("source", "nested.附表.收款账号"),
     'table "附表" is not listed in rows.nested'),
    (lambda d: d["target"]["options"].__setitem__("IsAutoSubmitAudit", True),
     "target.options: Value error, unknown BatchSave option"),
    (lambda d: d["target"].__setitem__("match_field", "FBILLNUMBER"), "target.match_field"),
    (lambda d: d["value_maps"]["employees"].__setitem__("reject_code", "oops"), "value_maps.employees"),
    (lambda d: d["write_back"].__setitem__("comment_text", "已付 {bill_no}"), "write_back"),
    (lambda d: d["source"].__setitem__("lookback_days", 0), "source.lookback_days"),
    (lambda d: d["mapping"]["entry"]["FPAYTOTALAMOUNTFOR"].__setitem__("format", "yyyy"),
     "mapping.entry.FPAYTOTALAMOUNTFOR"),
])
def test_faults_name_file_and_key(scheme_dir: Path, change: Any, expected: str) -> None:
    assert expected in _fault(_spoil(scheme_dir, change))


def test_missing_value_map_file(scheme_dir: Path) -> None:
    (scheme_dir / "expense_to_paybill" / "departments.csv").unlink()
    message = _fault(scheme_dir / DEFAULT.name)
    assert "value_maps.departments.file" in message and "departments.csv does not exist" in message


@pytest.mark.parametrize(("content", "expected"), [
    ("key,value\n1001,BM001\n1001,BM009\n", 'line 3: duplicate key "1001"'),
    ("dept,number\n1001,BM001\n", "must start with the header row key,value"),
    ("key,value\n1001,BM001,extra\n", "line 2: expected 2 columns"),
    ("key,value\n1001,\n", "line 2: empty key or value"),
])
def test_bad_value_map_csv(scheme_dir: Path, content: str, expected: str) -> None:
    (scheme_dir / "expense_to_paybill" / "departments.csv").write_text(content, encoding="utf-8")
    message = _fault(scheme_dir / DEFAULT.name)
    assert "value_maps.departments.file" in message and expected in message


def test_yaml_syntax_error_and_non_mapping(scheme_dir: Path) -> None:
    file = scheme_dir / DEFAULT.name
    file.write_text("id: [unclosed\n", encoding="utf-8")
    assert "not valid YAML" in _fault(file)
    file.write_text("- just\n- a list\n", encoding="utf-8")
    assert "a scheme is a mapping" in _fault(file)


def test_inline_value_map(scheme_dir: Path) -> None:
    def inline(d: dict) -> None:
        d["value_maps"]["departments"] = {"values": {"1001": "BM001"}, "reject_code": "unmapped_department"}
    scheme = load_scheme(_spoil(scheme_dir, inline))
    assert scheme.value_map("departments") == {"1001": "BM001"}


def test_ids_are_unique_across_files(scheme_dir: Path) -> None:
    shutil.copy(scheme_dir / DEFAULT.name, scheme_dir / "copy.yaml")
    duplicate = r'expense_to_paybill.yaml: id: "expense_to_paybill" is already used by .*copy.yaml'
    with pytest.raises(SchemeError, match=duplicate):
        load_schemes(scheme_dir)
