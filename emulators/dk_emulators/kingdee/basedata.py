"""Build the Kingdee emulator's base data (include/demo/kingdee_basedata.json) from the demo universe.

File format (every list optional)::

    {"about": "...",
     "forms": {"<base-data form id>": [{"id": 100001, "number": "BM001", "name": "行政部",
                                        "enabled": true, "document_status": "C",
                                        ...extra attributes}, ...], ...}}

``enabled`` is FForbidStatus (true = A, not forbidden; false = B, forbidden); ``document_status`` is
FDocumentStatus (C = audited; Z/A/B/D are not yet usable). Only enabled, audited records can be
referenced by a bill.

Form ids are K/3Cloud's: ORG_Organizations, BD_Currency, BOS_BillType (extra ``bill_form``: the
business form the type belongs to), BD_SETTLETYPE, CN_RECPAYPURPOSE, BD_Expense, BD_Department,
BD_Empinfo, BD_Supplier, BD_Customer. Ids are stable: derived from the form's position in
``FORM_ID_BASE`` and the record's position, so a regenerated file keeps the same ids.

Usage: ``python -m dk_emulators.kingdee.basedata [--universe U] [--out O] [--check]``; the files
default to the demo folder (``DK_DEMO_DIR``, see ``dk_emulators.demo_data``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from dk_emulators.demo_data import BASEDATA_FILE, UNIVERSE_FILE, demo_file

# The demo folder's files as resolved at import (DK_DEMO_DIR, else the checkout's include/demo).
DEFAULT_UNIVERSE = demo_file(UNIVERSE_FILE)
DEFAULT_OUT = demo_file(BASEDATA_FILE)

# First internal id of each form's records; real ids are opaque integers, these keep them apart.
FORM_ID_BASE: dict[str, int] = {
    "ORG_Organizations": 1,
    "BD_Currency": 1001,
    "BOS_BillType": 2001,
    "BD_SETTLETYPE": 3001,
    "CN_RECPAYPURPOSE": 4001,
    "BD_Expense": 5001,
    "BD_Department": 100001,
    "BD_Empinfo": 200001,
    "BD_Supplier": 300001,
    "BD_Customer": 400001,
}


def _records(form_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = FORM_ID_BASE[form_id]
    return [{"id": base + i, "enabled": True, "document_status": "C", **row} for i, row in enumerate(rows)]


def _employee(person: dict[str, Any], dept_numbers: dict[str, str]) -> dict[str, Any]:
    """The BD_Empinfo record of a person of the universe: ``staff_number`` is FStaffNumber (the job
    number DingTalk may also hold); ``kingdee_dept_id`` when Kingdee files the person elsewhere."""
    record: dict[str, Any] = {
        "number": person["kingdee_number"], "name": person["name"], "staff_number": person.get("staff_number"),
        "department": dept_numbers.get(person.get("kingdee_dept_id", person["dept_id"])),
        "bank_account": person.get("bank_account"), "bank_name": person.get("bank_name")}
    if person.get("kingdee_forbidden"):
        record["enabled"] = False
    return record


def build_basedata(universe: dict[str, Any]) -> dict[str, Any]:
    """The base-data document for ``universe`` (the demo organisation)."""
    kingdee = universe["kingdee"]
    dept_numbers = {d["dept_id"]: d["kingdee_number"] for d in universe["departments"]}
    expense_items: dict[str, str] = {}
    for category in universe["categories"].values():
        for type_name, number in category["types"].items():
            expense_items.setdefault(number, type_name)
    orgs = [{"number": kingdee["org_number"], "name": kingdee["org_name"]}]
    currencies = [{"number": "PRE001", "name": "人民币"}, {"number": "PRE002", "name": "香港元"},
                  {"number": "PRE007", "name": "美元"}]
    if kingdee["currency"] not in {c["number"] for c in currencies}:
        currencies.append({"number": kingdee["currency"], "name": kingdee["currency"]})
    bill_types = [{"number": "FKDLX01_SYS", "name": "采购业务付款单", "bill_form": "AP_PAYBILL"},
                  {"number": "FKDLX02_SYS", "name": "费用报销付款单", "bill_form": "AP_PAYBILL"}]
    if kingdee["bill_type"] not in {b["number"] for b in bill_types}:
        bill_types.append({"number": kingdee["bill_type"], "name": kingdee["bill_type"],
                           "bill_form": "AP_PAYBILL"})
    settle_types = [{"number": "JSFS01_SYS", "name": "现金"}, {"number": "JSFS04_SYS", "name": "电汇"}]
    if kingdee["settle_type"] not in {s["number"] for s in settle_types}:
        settle_types.append({"number": kingdee["settle_type"], "name": kingdee["settle_type"]})
    purposes = [{"number": "SFKYT01_SYS", "name": "购货款"}, {"number": "SFKYT08_SYS", "name": "费用报销"},
                {"number": "SFKYT10_SYS", "name": "员工报销"}]
    if kingdee["purpose"] not in {p["number"] for p in purposes}:
        purposes.append({"number": kingdee["purpose"], "name": kingdee["purpose"]})
    departments = [{"number": d["kingdee_number"], "name": d["name"], "org": kingdee["org_number"]}
                   for d in universe["departments"]]
    # Employees who file demo claims first (their ids never move), then the directory-only people.
    people = [*universe["employees"], *universe.get("directory_only", {}).get("employees", [])]
    employees = [_employee(e, dept_numbers) for e in people if e.get("kingdee_number")]
    return {
        "about": ("Kingdee K/3Cloud base data of the demo account set, generated from "
                  "include/demo/universe.json by dk_emulators.kingdee.basedata; "
                  "do not edit by hand."),
        "forms": {
            "ORG_Organizations": _records("ORG_Organizations", orgs),
            "BD_Currency": _records("BD_Currency", currencies),
            "BOS_BillType": _records("BOS_BillType", bill_types),
            "BD_SETTLETYPE": _records("BD_SETTLETYPE", settle_types),
            "CN_RECPAYPURPOSE": _records("CN_RECPAYPURPOSE", purposes),
            "BD_Expense": _records("BD_Expense", [{"number": n, "name": name}
                                                  for n, name in sorted(expense_items.items())]),
            "BD_Department": _records("BD_Department", departments),
            "BD_Empinfo": _records("BD_Empinfo", employees),
            "BD_Supplier": _records("BD_Supplier",
                                    [{"number": "VEN00001", "name": "上海示例供应商有限公司"}]),
            "BD_Customer": _records("BD_Customer", [{"number": "CUST0001", "name": "示例客户有限公司"}]),
        },
    }


def demo_paybill(universe: dict[str, Any], bill_no: str, amounts: Sequence[Decimal], employee_index: int = 0,
                 cost_items: Sequence[str] | None = None, third_bill_no: str | None = None,
                 remark: str | None = None) -> dict[str, Any]:
    """A valid AP_PAYBILL model for an employee of the demo universe, one entry per amount.

    ``cost_items`` gives each entry's expense item (default: 行政报销 / 差旅费 for every entry).
    """
    kd = universe["kingdee"]
    employee = universe["employees"][employee_index % len(universe["employees"])]
    dept = next(d["kingdee_number"] for d in universe["departments"] if d["dept_id"] == employee["dept_id"])
    items = list(cost_items or [universe["categories"]["行政报销"]["types"]["差旅费"]] * len(amounts))
    return {
        "FBillNo": bill_no,
        "FBillTypeID": {"FNUMBER": kd["bill_type"]},
        "FDATE": "2024-03-05",
        "FSETTLEORGID": {"FNumber": kd["org_number"]},
        "FPAYORGID": {"FNumber": kd["org_number"]},
        "FCURRENCYID": {"FNumber": kd["currency"]},
        "FSETTLECUR": {"FNUMBER": kd["currency"]},
        "FCONTACTUNITTYPE": "BD_Empinfo",
        "FCONTACTUNIT": {"FNumber": employee["kingdee_number"]},
        "FRECTUNITTYPE": "BD_Empinfo",
        "FRECTUNIT": {"FNumber": employee["kingdee_number"]},
        "FDepartment": {"FNumber": dept},
        "FTHIRDBILLNO": third_bill_no or f"T-{bill_no}",
        "FREMARK": remark or f"钉钉报销 {bill_no}",
        "FPAYBILLENTRY": [{
            "FSETTLETYPEID": {"FNumber": kd["settle_type"]},
            "FPURPOSEID": {"FNumber": kd["purpose"]},
            "FPAYTOTALAMOUNTFOR": amount,
            "FCOSTID": {"FNumber": item},
            "FEXPENSEDEPTID_E": {"FNumber": dept},
            "FOPPOSITEBANKACCOUNT": employee["bank_account"],
            "FOPPOSITECCOUNTNAME": employee["name"],
            "FOPPOSITEBANKNAME": employee["bank_name"],
            "FCOMMENT": f"row {row}",
        } for row, (amount, item) in enumerate(zip(amounts, items, strict=True))],
    }


def render(basedata: dict[str, Any]) -> str:
    return json.dumps(basedata, ensure_ascii=False, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--universe", type=Path, default=DEFAULT_UNIVERSE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file on disk differs from what would be generated")
    args = parser.parse_args(argv)
    text = render(build_basedata(json.loads(args.universe.read_text(encoding="utf-8"))))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date; regenerate it", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
