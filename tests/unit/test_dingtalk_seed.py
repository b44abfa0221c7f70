"""The seed generator: deterministic, shaped like the real detail answer, truth consistent with data."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import pytest
from dk_emulators.dingtalk.seed import (
    CHINA_TZ,
    EDGE_CASES,
    SeedClaim,
    SeedConfig,
    generate_claims,
    load_seed_file,
    load_universe,
    money_upper,
    write_seed_file,
)

START, END = date(2025, 3, 1), date(2025, 4, 1)
TOP_LABELS = {"费用归属项目": "DDSelectField", "报销类别": "DDSelectField", "TextNote_7L0ZKXODKW40": "TextNote",
              "行政报销类型": "DDSelectField", "项目报销类型": "DDSelectField", "报销明细": "TableField"}
ROW_LABELS = {"费用发生日期": "DDDateField", "报销金额(元)": "MoneyField", "费用明细": "TextareaField",
              "项目费用明细": "TableField"}
NESTED_LABELS = {"总金额": "MoneyField", "关联审批单": "RelateField", "TextNote-KDE5B2G3": "TextNote",
                 "电子发票": "DDAttachment", "收款账号": "TextField",
                 "公司帐号付款(如需公司帐号付款请选择)": "DDSelectField", "报销凭证拍照上传": "DDPhotoField",
                 "附件": "DDAttachment"}
UNIVERSE = load_universe()


def claims_for(**options: object) -> list[SeedClaim]:
    return generate_claims(SeedConfig(start=START, end=END, **{"count": 300, "seed": 3, **options}))


def top(claim: SeedClaim) -> dict[str, dict]:
    return {c["name"]: c for c in claim.instance["form_component_values"]}


def table_rows(value: str) -> list[dict]:
    """Rows of a TableField value; "null", "[]" and the schema quirk are zero rows."""
    if value == "null":
        return []
    parsed = json.loads(value)
    return [row for row in parsed if "rowValue" in row]


def cells(row: dict) -> dict[str, dict]:
    return {cell["label"]: cell for cell in row["rowValue"]}


def amount(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def test_same_config_same_claims_and_another_seed_differs():
    first, second = claims_for(seed=9), claims_for(seed=9)
    assert [c.instance for c in first] == [c.instance for c in second]
    assert [c.truth for c in first] == [c.truth for c in second]
    assert [c.instance for c in claims_for(seed=10)] != [c.instance for c in first]


def test_every_label_is_present_with_its_component_type():
    for claim in claims_for(count=40, nested_rate=1.0, edge_rate=0):
        components = top(claim)
        assert {name: c["component_type"] for name, c in components.items()} == TOP_LABELS
        for row in table_rows(components["报销明细"]["value"]):
            row_cells = cells(row)
            assert {label: c["componentType"] for label, c in row_cells.items()} == ROW_LABELS
            nested = table_rows(row_cells["项目费用明细"]["value"])
            assert nested
            for nested_row in nested:
                assert {label: c["componentType"] for label, c in cells(nested_row).items()} == NESTED_LABELS


def test_values_are_strings_and_cell_extensions_are_objects():
    for claim in claims_for(count=60, nested_rate=0.6):
        for component in claim.instance["form_component_values"]:
            assert isinstance(component["value"], str)
            if "ext_value" in component:
                assert isinstance(component["ext_value"], str)
                json.loads(component["ext_value"])
        for row in table_rows(top(claim)["报销明细"]["value"]):
            for cell in row["rowValue"]:
                assert isinstance(cell["value"], str)
                assert "extValue" not in cell
                if "extendValue" in cell:
                    assert isinstance(cell["extendValue"], dict)


def test_nested_totals_add_up_to_their_row_amount():
    checked = 0
    for claim in claims_for(nested_rate=0.8):
        for row in table_rows(top(claim)["报销明细"]["value"]):
            row_cells = cells(row)
            nested = table_rows(row_cells["项目费用明细"]["value"])
            if nested:
                total = sum((amount(cells(n)["总金额"]["value"]) for n in nested), Decimal("0"))
                assert total == amount(row_cells["报销金额(元)"]["value"])
                checked += 1
    assert checked > 100


def test_empty_project_details_come_in_every_empty_form():
    seen = set()
    for claim in claims_for(count=80, nested_rate=0, edge_rate=0):
        for row in table_rows(top(claim)["报销明细"]["value"]):
            value = cells(row)["项目费用明细"]["value"]
            if value in ("null", "[]"):
                seen.add(value)
            else:
                schema = json.loads(value)
                assert schema and all("componentName" in e and "props" in e and "rowValue" not in e
                                      for e in schema)
                seen.add("schema")
    assert seen == {"null", "[]", "schema"}


def test_truth_of_payable_claims_matches_their_data():
    employees = {e["userid"] for e in UNIVERSE["employees"]}
    payable = [c for c in claims_for() if c.truth.payable]
    assert len(payable) > 150
    for claim in payable:
        instance, truth = claim.instance, claim.truth
        assert truth.expected_reject is None and truth.edge_case is None
        assert (truth.final_status, truth.final_result) == ("COMPLETED", "agree")
        if truth.late_approval_at is None:
            assert (instance["status"], instance["result"]) == ("COMPLETED", "agree")
        else:
            assert instance["status"] == "RUNNING" and "finish_time" not in instance
        assert instance["originator_userid"] in employees
        rows = table_rows(top(claim)["报销明细"]["value"])
        assert rows
        total = sum((amount(cells(r)["报销金额(元)"]["value"]) for r in rows), Decimal("0"))
        assert total == truth.expected_total and total > 0


def test_not_approved_and_waiting_claims():
    claims = claims_for(status_weights={"refuse": 1, "terminated": 1, "canceled": 1, "running": 1},
                        late_approval_share=0.0)
    statuses = {(c.instance["status"], c.instance["result"]) for c in claims}
    assert statuses == {("COMPLETED", "refuse"), ("TERMINATED", ""), ("CANCELED", ""), ("RUNNING", "")}
    for claim in claims:
        assert not claim.truth.payable and claim.truth.edge_case is None
        expected = None if claim.instance["status"] == "RUNNING" else "not_approved"
        assert claim.truth.expected_reject == expected
        assert ("finish_time" in claim.instance) == (claim.instance["status"] != "RUNNING")


def test_edge_cases_carry_their_reason_and_show_in_the_data():
    claims = claims_for(count=400, edge_rate=0.5)
    by_id = {c.instance_id: c for c in claims}
    unmapped_users = {e["userid"] for e in UNIVERSE["unmapped_employees"]}
    unmapped_types = {t for types in UNIVERSE["unmapped_types"].values() for t in types}
    seen = set()
    for position, claim in enumerate(claims):
        edge = claim.truth.edge_case
        if edge is None:
            continue
        seen.add(edge)
        assert not claim.truth.payable and claim.truth.expected_reject == EDGE_CASES[edge]
        components = top(claim)
        rows = table_rows(components["报销明细"]["value"])
        amounts = [cells(r)["报销金额(元)"]["value"] for r in rows]
        if edge == "no_rows":
            assert rows == []
        elif edge == "amount_missing":
            assert "null" in amounts
        elif edge == "amount_unparseable":
            assert "abc" in amounts
            with pytest.raises(InvalidOperation):
                [amount(a) for a in amounts]
        elif edge == "amount_not_positive":
            assert any(amount(a) <= 0 for a in amounts)
        elif edge == "unmapped_employee":
            assert claim.instance["originator_userid"] in unmapped_users
        elif edge == "unmapped_type":
            chosen = {components["行政报销类型"]["value"], components["项目报销类型"]["value"]}
            assert chosen & unmapped_types
        elif edge == "duplicate_business_id":
            originals = [c for c in claims[:position] if c.business_id == claim.business_id]
            # The first claim with the id pays; every later one (there may be several) is a duplicate.
            assert originals and originals[0].truth.payable
            assert all(o.truth.edge_case == "duplicate_business_id" for o in originals[1:])
            assert originals[0].instance["create_time"] <= claim.instance["create_time"]
            assert by_id[originals[0].instance_id] is originals[0]
    assert seen == set(EDGE_CASES)


def test_without_edge_cases_nothing_unmapped_appears():
    unmapped_users = {e["userid"] for e in UNIVERSE["unmapped_employees"]}
    claims = claims_for(edge_rate=0)
    assert all(c.truth.edge_case is None for c in claims)
    assert not {c.instance["originator_userid"] for c in claims} & unmapped_users
    business_ids = [c.business_id for c in claims]
    assert len(set(business_ids)) == len(business_ids)
    assert all(len(b) == 21 and b.isdigit() for b in business_ids)


def test_times_are_china_time_strings_inside_the_window():
    claims = claims_for(count=100)
    start = datetime(2025, 3, 1, tzinfo=CHINA_TZ)
    end = datetime(2025, 4, 1, tzinfo=CHINA_TZ)
    created = [c.instance["create_time"] for c in claims]
    assert created == sorted(created)
    for claim in claims:
        moment = datetime.strptime(claim.instance["create_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA_TZ)
        assert start <= moment < end
        if "finish_time" in claim.instance:
            assert claim.instance["finish_time"] > claim.instance["create_time"]
        if claim.truth.late_approval_at is not None:
            assert claim.truth.late_approval_at > moment


def test_late_approvals_are_planned_for_some_running_claims():
    claims = claims_for(status_weights={"running": 1}, late_approval_share=0.5)
    planned = [c for c in claims if c.truth.late_approval_at is not None]
    assert 0 < len(planned) < len(claims)
    assert all(c.instance["status"] == "RUNNING" for c in claims)


def test_rows_per_claim_follow_the_config():
    for claim in claims_for(count=50, rows=(2, 3), edge_rate=0):
        assert 2 <= len(table_rows(top(claim)["报销明细"]["value"])) <= 3


def test_amount_formats_include_thousands_separators():
    texts = [cells(r)["报销金额(元)"]["value"] for c in claims_for(count=300, edge_rate=0)
             for r in table_rows(top(c)["报销明细"]["value"])]
    assert any("," in t for t in texts)
    assert any("." in t for t in texts) and any(t.isdigit() for t in texts)


def test_seed_file_round_trip(tmp_path):
    claims = claims_for(count=5)
    path = tmp_path / "seed.json"
    assert write_seed_file(path, claims) == 5
    assert load_seed_file(path) == [c.instance for c in claims]
    (tmp_path / "bad.json").write_text('[{"title": "x"}]', encoding="utf-8")
    with pytest.raises(ValueError):
        load_seed_file(tmp_path / "bad.json")


@pytest.mark.parametrize(("value", "upper"), [
    ("150", "壹佰伍拾元整"), ("1280.50", "壹仟贰佰捌拾元伍角"), ("10001", "壹万零壹元整"),
    ("100100", "壹拾万零壹佰元整"), ("1.05", "壹元零伍分"), ("0", "零元整"),
])
def test_money_upper(value, upper):
    assert money_upper(Decimal(value)) == upper


def test_bad_configs_are_refused():
    with pytest.raises(ValueError):
        claims_for(status_weights={"approved": 1})
    with pytest.raises(ValueError):
        claims_for(rows=(0, 2))
    with pytest.raises(ValueError):
        generate_claims(SeedConfig(start=END, end=START))
    assert len(generate_claims(SeedConfig(count=3, start=datetime(2025, 1, 1, 8), end=START))) == 3
