"""What a correct sync must have written for a seeded claim, worked out independently of the transform.

Reads the claim as DingTalk sent it and the demo organisation (include/demo/universe.json), the same
sources an accountant would check a bill against.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

UNIVERSE = json.loads((Path(__file__).resolve().parents[2] / "include" / "demo" / "universe.json")
                      .read_text(encoding="utf-8"))
EMPLOYEES = {e["userid"]: e["kingdee_number"] for e in UNIVERSE["employees"]}
DEPARTMENTS = {d["dept_id"]: d["kingdee_number"] for d in UNIVERSE["departments"]}
EXPENSE_ITEMS = {f"{category}/{kind}": number
                 for category, spec in UNIVERSE["categories"].items() for kind, number in spec["types"].items()}
CENT = Decimal("0.01")


def _component(instance: dict, name: str) -> dict | None:
    return next((c for c in instance["form_component_values"] if c.get("name") == name), None)


def _text(instance: dict, name: str) -> str | None:
    component = _component(instance, name)
    value = None if component is None else component.get("value")
    return None if value in (None, "", "null") else value


def expected_entries(instance: dict) -> list[dict]:
    rows = json.loads(_text(instance, "报销明细"))
    category = _text(instance, "报销类别")
    kind = _text(instance, "行政报销类型") or _text(instance, "项目报销类型")
    entries = []
    for row in rows:
        cells = {cell["label"]: cell.get("value") for cell in row["rowValue"]}
        amount = Decimal(cells["报销金额(元)"].replace(",", "")).quantize(CENT)
        entries.append({
            "FPAYTOTALAMOUNTFOR": amount,
            "FCOSTID": EXPENSE_ITEMS[f"{category}/{kind}"],
            "FEXPENSEDEPTID_E": DEPARTMENTS[instance["originator_dept_id"]],
            "description": cells.get("费用明细"),
            "date": cells.get("费用发生日期"),
        })
    return entries


def expected_bill(instance: dict) -> dict:
    return {
        "FBillNo": instance["business_id"],
        "FTHIRDBILLNO": instance["business_id"],
        "FDATE": instance["finish_time"][:10],
        "FCONTACTUNITTYPE": "BD_Empinfo",
        "FCONTACTUNIT": EMPLOYEES[instance["originator_userid"]],
        "FRECTUNITTYPE": "BD_Empinfo",
        "FRECTUNIT": EMPLOYEES[instance["originator_userid"]],
        "FDepartment": DEPARTMENTS[instance["originator_dept_id"]],
        "FCURRENCYID": UNIVERSE["kingdee"]["currency"],
        "FPAYORGID": UNIVERSE["kingdee"]["org_number"],
        "FSETTLEORGID": UNIVERSE["kingdee"]["org_number"],
        "FBillTypeID": UNIVERSE["kingdee"]["bill_type"],
        "entries": expected_entries(instance),
    }


def number_of(ref) -> str | None:
    if isinstance(ref, dict):
        return ref.get("FNumber") or ref.get("FNUMBER")
    return ref


def compare_bill(stored: dict, instance: dict) -> list[str]:
    """Every difference between a bill Kingdee holds and the bill the claim should have become."""
    want = expected_bill(instance)
    problems = []
    for key in ("FBillNo", "FTHIRDBILLNO", "FDATE", "FCONTACTUNITTYPE", "FRECTUNITTYPE"):
        if str(stored.get(key)) != str(want[key]):
            problems.append(f"{key}: {stored.get(key)!r} != {want[key]!r}")
    for key in ("FCONTACTUNIT", "FRECTUNIT", "FDepartment", "FCURRENCYID", "FPAYORGID", "FSETTLEORGID",
                "FBillTypeID"):
        if number_of(stored.get(key)) != want[key]:
            problems.append(f"{key}: {stored.get(key)!r} != {want[key]!r}")
    entries = stored.get("FPAYBILLENTRY") or []
    if len(entries) != len(want["entries"]):
        return [*problems, f"{len(entries)} entries != {len(want['entries'])} rows"]
    for position, (got, exp) in enumerate(zip(entries, want["entries"], strict=True), start=1):
        if Decimal(str(got["FPAYTOTALAMOUNTFOR"])) != exp["FPAYTOTALAMOUNTFOR"]:
            problems.append(f"entry {position} amount {got['FPAYTOTALAMOUNTFOR']} != {exp['FPAYTOTALAMOUNTFOR']}")
        for key in ("FCOSTID", "FEXPENSEDEPTID_E"):
            if number_of(got.get(key)) != exp[key]:
                problems.append(f"entry {position} {key}: {got.get(key)!r} != {exp[key]!r}")
        if exp["description"] and exp["description"] not in str(got.get("FCOMMENT")):
            problems.append(f"entry {position} FCOMMENT {got.get('FCOMMENT')!r} lacks {exp['description']!r}")
    return problems


def bill_total(stored: dict) -> Decimal:
    return sum((Decimal(str(e["FPAYTOTALAMOUNTFOR"])) for e in stored.get("FPAYBILLENTRY") or []), Decimal("0"))
