"""Deterministic, realistic expense claims (报销) for the DingTalk emulator, each with its truth.

Every claim is shaped exactly like the ``process_instance`` of the detail answer (plus
``process_instance_id`` and ``process_code``) and uses the expense form of the scheme
(scheme-expense-to-paybill.md): the same labels, component types and value encodings the real
service returns, quirks included. ``truth`` says what a correct sync must do with the claim.

    claims = generate_claims(SeedConfig(count=200, start=date(2025, 3, 1), end=date(2025, 4, 1), seed=7))
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from dk_emulators.demo_data import UNIVERSE_FILE, demo_file, read_demo_text
from dk_emulators.dingtalk.seed_form import (
    DEFAULT_PROFILE,
    LABEL_ADMIN_TYPE,
    LABEL_AMOUNT,
    LABEL_ATTACHMENTS,
    LABEL_CATEGORY,
    LABEL_COMPANY_PAY,
    LABEL_DATE,
    LABEL_DESCRIPTION,
    LABEL_DETAILS,
    LABEL_INVOICE,
    LABEL_NESTED_NOTE,
    LABEL_NESTED_TOTAL,
    LABEL_NOTE,
    LABEL_PAYEE_ACCOUNT,
    LABEL_PHOTOS,
    LABEL_PROJECT,
    LABEL_PROJECT_DETAILS,
    LABEL_PROJECT_TYPE,
    LABEL_RELATED,
    NESTED_COMPONENTS,
    ROW_COMPONENTS,
    TOP_COMPONENTS,
    TYPE_PROFILES,
    cell,
    china_datetime,
    china_text,
    compact_json,
    file_value,
    format_money,
    money_upper,
    random_token,
    split_cents,
    table_schema,
    top_cell,
)
from dk_emulators.dingtalk.wire import CHINA_TZ, DEFAULT_PROCESS_CODE

# Final states a generated claim can be in (keys of SeedConfig.status_weights).
STATUS_KINDS = ("agree", "refuse", "terminated", "canceled", "running")

# Edge case name -> the reject reason code a correct transform must give.
EDGE_CASES: dict[str, str] = {
    "no_rows": "no_rows",
    "amount_missing": "amount_missing",
    "amount_unparseable": "amount_unparseable",
    "amount_not_positive": "amount_not_positive",
    "unmapped_employee": "unmapped_employee",
    "unmapped_type": "unmapped_expense_item",
    "duplicate_business_id": "duplicate_business_id",
}
REJECT_NOT_APPROVED = "not_approved"
HEX = "0123456789abcdef"


@dataclass
class SeedConfig:
    """What to generate. ``start``/``end``: creation-time window [start, end); a date is midnight
    China time, a naive datetime is China time. Defaults: the 30 days before now."""

    count: int = 100
    start: datetime | date | None = None
    end: datetime | date | None = None
    seed: int = 1
    process_code: str = DEFAULT_PROCESS_CODE
    status_weights: Mapping[str, float] = field(default_factory=lambda: {
        "agree": 0.72, "refuse": 0.08, "terminated": 0.04, "canceled": 0.04, "running": 0.12})
    late_approval_share: float = 0.5  # of RUNNING claims, how many get a planned late approval
    rows: tuple[int, int] = (1, 4)  # rows of 报销明细 per claim, inclusive
    edge_rate: float = 0.05  # of approved claims, how many carry an edge case
    nested_rate: float = 0.3  # of 报销明细 rows, how many have 项目费用明细 rows
    universe: Mapping[str, Any] | None = None  # the demo universe; None = load_universe()


@dataclass(frozen=True)
class SeedTruth:
    """What a correct sync must do with a claim once its planned late approval (if any) happened."""

    payable: bool
    expected_total: Decimal | None  # sum of 报销金额(元) when payable
    expected_reject: str | None  # reason code (EDGE_CASES values or "not_approved"); None if payable/waiting
    edge_case: str | None
    late_approval_at: datetime | None  # when the test/demo should call set_outcome(... agree)
    final_status: str  # status once planned events happened (RUNNING = stays waiting)
    final_result: str


@dataclass
class SeedClaim:
    instance: dict
    truth: SeedTruth

    @property
    def instance_id(self) -> str:
        return self.instance["process_instance_id"]

    @property
    def business_id(self) -> str:
        return self.instance["business_id"]


def load_universe(path: Path | str | None = None) -> dict:
    """The demo universe (employees, departments, expense types); default: ``universe.json`` of the
    demo folder (``DK_DEMO_DIR``, see ``dk_emulators.demo_data``)."""
    return json.loads(read_demo_text(Path(path) if path is not None else demo_file(UNIVERSE_FILE)))



# ---------------------------------------------------------------------- the generator
class _Generator:
    def __init__(self, config: SeedConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.universe = dict(config.universe) if config.universe is not None else load_universe()
        self.departments = {d["dept_id"]: d for d in self.universe["departments"]}
        self.employees = list(self.universe["employees"])
        self.unmapped_employees = list(self.universe.get("unmapped_employees", []))
        self.managers = [e for e in self.employees if e["userid"].startswith("manager")] or self.employees
        self.finance = [e for e in self.employees if e["dept_id"] == "1002"] or self.employees
        self.business_ids: set[str] = set()
        unknown = set(config.status_weights) - set(STATUS_KINDS)
        if unknown:
            raise ValueError(f"unknown status kinds {sorted(unknown)}; known: {STATUS_KINDS}")
        if config.rows[0] < 1 or config.rows[1] < config.rows[0]:
            raise ValueError("rows must be (low, high) with 1 <= low <= high")

    def run(self) -> list[SeedClaim]:
        config, rng = self.config, self.rng
        now = datetime.now(CHINA_TZ).replace(microsecond=0)
        end = china_datetime(config.end, now)
        start = china_datetime(config.start, end - timedelta(days=30))
        if end <= start:
            raise ValueError("end must be after start")
        span = int((end - start).total_seconds())
        created = sorted(start + timedelta(seconds=rng.randrange(span)) for _ in range(config.count))
        kinds = list(config.status_weights)
        weights = [config.status_weights[k] for k in kinds]
        claims: list[SeedClaim] = []
        for created_at in created:
            kind = rng.choices(kinds, weights)[0]
            late_at = None
            if kind == "running" and rng.random() < config.late_approval_share:
                late_at = created_at + timedelta(hours=rng.randint(30, 240), minutes=rng.randint(0, 59))
            approved = kind == "agree" or late_at is not None
            edge = None
            if approved and rng.random() < config.edge_rate:
                edge = rng.choice(list(EDGE_CASES))
                if edge == "duplicate_business_id" and (kind != "agree" or not self._payable_originals(claims)):
                    edge = rng.choice([e for e in EDGE_CASES if e != "duplicate_business_id"])
            claims.append(self._claim(created_at, kind, late_at, edge, end, claims))
        return claims

    @staticmethod
    def _payable_originals(claims: list[SeedClaim]) -> list[SeedClaim]:
        return [c for c in claims if c.truth.payable and c.truth.late_approval_at is None]

    def _business_id(self, created_at: datetime) -> str:
        while True:
            candidate = f"{created_at:%Y%m%d%H%M}{self.rng.randint(0, 999_999_999):09d}"
            if candidate not in self.business_ids:
                self.business_ids.add(candidate)
                return candidate

    def _claim(self, created_at: datetime, kind: str, late_at: datetime | None, edge: str | None,
               end: datetime, earlier: list[SeedClaim]) -> SeedClaim:
        rng = self.rng
        if edge == "unmapped_employee" and self.unmapped_employees:
            employee = rng.choice(self.unmapped_employees)
        else:
            employee = rng.choice(self.employees)
        department = self.departments.get(employee["dept_id"], {"dept_id": "-1", "name": "全员"})

        categories = self.universe["categories"]
        if edge == "unmapped_type":
            category = next(c for c, types in self.universe["unmapped_types"].items() if types)
            expense_type = rng.choice(self.universe["unmapped_types"][category])
        else:
            category = "行政报销" if rng.random() < 0.6 else "项目报销"
            expense_type = rng.choice(list(categories[category]["types"]))
        form, total = self._form(employee, category, expense_type, created_at, edge, earlier)

        instance_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        business_id = self._business_id(created_at)
        if edge == "duplicate_business_id":
            business_id = rng.choice(self._payable_originals(earlier)).business_id
        instance: dict[str, Any] = {
            "process_instance_id": instance_id,
            "process_code": self.config.process_code,
            "title": f"{employee['name']}提交的报销",
            "create_time": china_text(created_at),
            "originator_userid": employee["userid"],
            "originator_dept_id": department["dept_id"],
            "originator_dept_name": department["name"],
            "business_id": business_id,
            "biz_action": "MODIFY" if rng.random() < 0.03 else "NONE",
            "cc_userids": [rng.choice(self.finance)["userid"]] if rng.random() < 0.3 else [],
            "attached_process_instance_ids": [],
            "main_process_instance_id": "",
            "form_component_values": form,
        }
        finish_at = self._flow(instance, employee, created_at, kind, end)
        instance = self._ordered(instance, finish_at)

        final_status, final_result = instance["status"], instance["result"]
        if late_at is not None:
            final_status, final_result = "COMPLETED", "agree"
        if edge is not None:
            truth = SeedTruth(False, None, EDGE_CASES[edge], edge, late_at, final_status, final_result)
        elif final_status == "COMPLETED" and final_result == "agree":
            truth = SeedTruth(True, total, None, None, late_at, final_status, final_result)
        elif final_status in {"RUNNING", "NEW"}:
            truth = SeedTruth(False, None, None, None, None, final_status, final_result)
        else:
            truth = SeedTruth(False, None, REJECT_NOT_APPROVED, None, None, final_status, final_result)
        return SeedClaim(instance=instance, truth=truth)

    @staticmethod
    def _ordered(instance: dict, finish_at: datetime | None) -> dict:
        """Key order of a real answer (finish_time right after create_time; absent while running)."""
        ordered: dict[str, Any] = {}
        for key, value in instance.items():
            ordered[key] = value
            if key == "create_time" and finish_at is not None:
                ordered["finish_time"] = china_text(finish_at)
        return ordered

    # -- the form --------------------------------------------------------------------------
    def _select(self, label: str, value: str, options: list[str]) -> dict:
        return top_cell(label, value, {"label": value, "key": f"option_{options.index(value)}"})

    def _form(self, employee: dict, category: str, expense_type: str, created_at: datetime,
              edge: str | None, earlier: list[SeedClaim]) -> tuple[list[dict], Decimal]:
        rng, universe = self.rng, self.universe
        projects = list(universe["cost_projects"])
        project = "公司日常运营" if category == "行政报销" and "公司日常运营" in projects else rng.choice(projects)
        admin_options = list(universe["categories"]["行政报销"]["types"]) + list(
            universe.get("unmapped_types", {}).get("行政报销", []))
        project_options = list(universe["categories"]["项目报销"]["types"]) + list(
            universe.get("unmapped_types", {}).get("项目报销", []))

        rows, total = self._rows(employee, expense_type, created_at, edge, earlier)
        components = [
            self._select(LABEL_PROJECT, project, projects),
            self._select(LABEL_CATEGORY, category, ["行政报销", "项目报销"]),
            top_cell(LABEL_NOTE, "单张发票超过1000元请附明细，出差请关联出差申请" if rng.random() < 0.5 else "null"),
            (self._select(LABEL_ADMIN_TYPE, expense_type, admin_options) if category == "行政报销"
             else top_cell(LABEL_ADMIN_TYPE, "null")),
            (self._select(LABEL_PROJECT_TYPE, expense_type, project_options) if category == "项目报销"
             else top_cell(LABEL_PROJECT_TYPE, "null")),
        ]
        stat: list[dict] = []
        if rows and edge not in {"amount_missing", "amount_unparseable", "amount_not_positive"}:
            stat = [{"id": ROW_COMPONENTS[LABEL_AMOUNT][0], "label": LABEL_AMOUNT,
                     "num": format(total, ".2f"), "upper": money_upper(total)}]
        empty_forms = ["null", "[]", compact_json(table_schema(ROW_COMPONENTS))]
        table_value = compact_json(rows) if rows else rng.choice(empty_forms)
        components.append(top_cell(LABEL_DETAILS, table_value, {"statValue": stat, "componentName": "TableField"}))
        return components, total

    def _rows(self, employee: dict, expense_type: str, created_at: datetime, edge: str | None,
              earlier: list[SeedClaim]) -> tuple[list[dict], Decimal]:
        rng, config = self.rng, self.config
        if edge == "no_rows":
            return [], Decimal("0")
        low, high, descriptions = TYPE_PROFILES.get(expense_type, DEFAULT_PROFILE)
        count = rng.randint(*config.rows)
        broken_row = rng.randrange(count) if edge in {"amount_missing", "amount_unparseable",
                                                     "amount_not_positive"} else None
        rows, total_cents = [], 0
        table_key = TOP_COMPONENTS[LABEL_DETAILS][0]
        for index in range(count):
            cents = rng.randint(low, high) * 100
            if rng.random() < 0.5:
                cents += rng.randint(0, 99) if rng.random() < 0.5 else rng.randint(0, 9) * 10
            spent_on = (created_at - timedelta(days=rng.randint(0, 25))).astimezone(CHINA_TZ)
            spent_text = (f"{spent_on:%Y-%m-%d}" if rng.random() < 0.85
                          else f"{spent_on:%Y-%m-%d} {rng.randint(7, 22):02d}:{rng.choice((0, 15, 30, 45)):02d}")
            amount_extend: dict | None = None
            if index == broken_row:
                amount_text = {"amount_missing": "null", "amount_unparseable": "abc"}.get(
                    edge or "", rng.choice(["0", "0.00", "-50.00"]))
            else:
                amount_text = format_money(cents, rng)
                total_cents += cents
                if rng.random() < 0.7:
                    amount_extend = {"upper": money_upper(Decimal(cents) / 100), "componentName": "MoneyField"}
            nested = (self._nested_rows(employee, cents, earlier)
                      if index != broken_row and rng.random() < config.nested_rate else [])
            if nested:
                nested_value = compact_json(nested)
            else:
                nested_value = rng.choice(
                    ["null", "[]", compact_json(table_schema(NESTED_COMPONENTS))])
            rows.append({
                "rowNumber": f"{table_key}_{random_token(rng, 13)}",
                "rowValue": [
                    cell(LABEL_DATE, ROW_COMPONENTS, spent_text),
                    cell(LABEL_AMOUNT, ROW_COMPONENTS, amount_text, amount_extend),
                    cell(LABEL_DESCRIPTION, ROW_COMPONENTS, rng.choice(descriptions)),
                    cell(LABEL_PROJECT_DETAILS, ROW_COMPONENTS, nested_value,
                          {"statValue": [], "componentName": "TableField"}),
                ],
            })
        return rows, Decimal(total_cents) / 100

    def _nested_rows(self, employee: dict, row_cents: int, earlier: list[SeedClaim]) -> list[dict]:
        rng = self.rng
        table_key = ROW_COMPONENTS[LABEL_PROJECT_DETAILS][0]
        nested = []
        for cents in split_cents(row_cents, rng.randint(1, 3), rng):
            related_value, related_extend = "null", None
            if earlier and rng.random() < 0.4:
                other = rng.choice(earlier).instance
                related_value = compact_json([other["title"]])
                related_extend = {"list": [{"businessId": other["business_id"],
                                            "procInstId": other["process_instance_id"]}]}
            invoices = [file_value(rng, f"电子发票_{rng.randint(10**7, 10**8 - 1)}.pdf", "pdf")]
            photos = [f"https://static.dingtalk.com/media/lALP{random_token(rng, 24)}_1080_1440.jpg"
                      for _ in range(rng.randint(1, 2))]
            company_pay = "否" if rng.random() < 0.9 else "是"
            nested.append({
                "rowNumber": f"{table_key}_{random_token(rng, 13)}",
                "rowValue": [
                    cell(LABEL_NESTED_TOTAL, NESTED_COMPONENTS, format_money(cents, rng),
                          {"upper": money_upper(Decimal(cents) / 100), "componentName": "MoneyField"}),
                    cell(LABEL_RELATED, NESTED_COMPONENTS, related_value, related_extend),
                    cell(LABEL_NESTED_NOTE, NESTED_COMPONENTS, "请上传与总金额一致的电子发票"),
                    cell(LABEL_INVOICE, NESTED_COMPONENTS,
                          compact_json(invoices) if rng.random() < 0.8 else "null"),
                    cell(LABEL_PAYEE_ACCOUNT, NESTED_COMPONENTS, employee.get("bank_account", "null")),
                    cell(LABEL_COMPANY_PAY, NESTED_COMPONENTS, company_pay,
                          {"label": company_pay, "key": "option_1" if company_pay == "否" else "option_0"}),
                    cell(LABEL_PHOTOS, NESTED_COMPONENTS,
                          compact_json(photos) if rng.random() < 0.6 else "null"),
                    cell(LABEL_ATTACHMENTS, NESTED_COMPONENTS,
                          compact_json([file_value(rng, "费用清单.xlsx", "xlsx")])
                          if rng.random() < 0.3 else "null"),
                ],
            })
        return nested

    # -- the approval flow -----------------------------------------------------------------
    def _flow(self, instance: dict, employee: dict, created_at: datetime, kind: str,
              end: datetime) -> datetime | None:
        """Fill status, result, tasks and operation_records; return the finish time (None = open)."""
        rng = self.rng
        manager = rng.choice([m for m in self.managers if m["userid"] != employee["userid"]] or self.managers)
        finance = rng.choice([f for f in self.finance if f["userid"] != employee["userid"]] or self.finance)
        first_at = created_at + timedelta(minutes=rng.randint(10, 24 * 60))
        finish_at = first_at + timedelta(minutes=rng.randint(10, 48 * 60))
        # Finished claims finish inside the window when they can (a generated history, not a forecast).
        ceiling = max(end, created_at + timedelta(minutes=30))
        finish_at = min(finish_at, ceiling)
        first_at = min(first_at, finish_at - timedelta(minutes=5))
        records = [{"userid": employee["userid"], "date": china_text(created_at),
                    "operation_type": "START_PROCESS_INSTANCE", "operation_result": "NONE"}]
        tasks: list[dict] = []

        def task(user: dict, status: str, result: str, begun: datetime, done: datetime | None) -> dict:
            taskid = str(rng.randint(10**10, 10**11 - 1))
            entry = {"userid": user["userid"], "task_status": status, "task_result": result,
                     "create_time": china_text(begun), "taskid": taskid,
                     "activity_id": f"{random_token(rng, 8, HEX)}-{random_token(rng, 4, HEX)}",
                     "url": ("https://aflow.dingtalk.com/dingtalk/mobile/homepage.htm?dd_share=false&showmenu=true"
                             f"&back=native&procInstId={instance['process_instance_id']}&taskId={taskid}"
                             "&swfrom=isv&dinghash=approval#approval")}
            if done is not None:
                entry["finish_time"] = china_text(done)
            return entry

        status, result = {"agree": ("COMPLETED", "agree"), "refuse": ("COMPLETED", "refuse"),
                          "terminated": ("TERMINATED", ""), "canceled": ("CANCELED", ""),
                          "running": ("RUNNING", "")}[kind]
        if kind in {"agree", "refuse"}:
            tasks.append(task(manager, "COMPLETED", "AGREE", created_at, first_at))
            records.append({"userid": manager["userid"], "date": china_text(first_at),
                            "operation_type": "EXECUTE_TASK_NORMAL", "operation_result": "AGREE"})
            decision = "AGREE" if kind == "agree" else "REFUSE"
            tasks.append(task(finance, "COMPLETED", decision, first_at, finish_at))
            refusal = {"remark": "发票抬头不符，请重新提交"} if kind == "refuse" else {}
            records.append({"userid": finance["userid"], "date": china_text(finish_at),
                            "operation_type": "EXECUTE_TASK_NORMAL", "operation_result": decision, **refusal})
        elif kind in {"terminated", "canceled"}:
            tasks.append(task(manager, "CANCELED", "NONE", created_at, finish_at))
            records.append({"userid": employee["userid"], "date": china_text(finish_at),
                            "operation_type": "TERMINATE_PROCESS_INSTANCE", "operation_result": "NONE"})
        else:
            if rng.random() < 0.5:  # waiting on the manager, or already on finance
                tasks.append(task(manager, "RUNNING", "NONE", created_at, None))
            else:
                tasks.append(task(manager, "COMPLETED", "AGREE", created_at, first_at))
                records.append({"userid": manager["userid"], "date": china_text(first_at),
                                "operation_type": "EXECUTE_TASK_NORMAL", "operation_result": "AGREE"})
                tasks.append(task(finance, "RUNNING", "NONE", first_at, None))
            finish_at = None
        instance.update(status=status, result=result, operation_records=records, tasks=tasks)
        return finish_at


def generate_claims(config: SeedConfig) -> list[SeedClaim]:
    """``config.count`` claims created in [start, end), oldest first; same config, same claims."""
    return _Generator(config).run()


# ---------------------------------------------------------------------- seed files
def write_seed_file(path: Path | str, instances: Iterable[Any]) -> int:
    """Write instances (dicts or SeedClaims) as a JSON list; returns how many were written."""
    items = [getattr(item, "instance", item) for item in instances]
    Path(path).write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    return len(items)


def load_seed_file(path: Path | str) -> list[dict]:
    """Read a JSON list of instances (process_instance objects plus process_instance_id/process_code)."""
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"{path}: expected a JSON list of instance objects")
    for position, item in enumerate(items):
        if not item.get("process_instance_id") or not item.get("create_time"):
            raise ValueError(f"{path}: instance #{position} lacks process_instance_id or create_time")
        item.setdefault("process_code", DEFAULT_PROCESS_CODE)
    return items


def truth_as_json(truth: SeedTruth) -> dict:
    """A SeedTruth in JSON-friendly form (Decimal and datetime as strings), for demo reports."""
    return {
        "payable": truth.payable,
        "expected_total": None if truth.expected_total is None else format(truth.expected_total, ".2f"),
        "expected_reject": truth.expected_reject,
        "edge_case": truth.edge_case,
        "late_approval_at": None if truth.late_approval_at is None
        else truth.late_approval_at.astimezone(UTC).isoformat(),
        "final_status": truth.final_status,
        "final_result": truth.final_result,
    }

__all__ = [
    "CHINA_TZ", "DEFAULT_PROCESS_CODE", "EDGE_CASES", "REJECT_NOT_APPROVED", "STATUS_KINDS", "SeedClaim", "SeedConfig",
    "SeedTruth", "generate_claims", "load_seed_file", "load_universe", "money_upper", "truth_as_json",
    "write_seed_file",
]
