"""The month's DingTalk calls against the scheme's budget, and writing a step's calls to the ledger.

DingTalk meters calls per organisation per calendar month (reference "Metered calls"); the budget is
this project's share. Near it (``NEAR_SHARE``) a run degrades in a stated order (docs/operating.md):
the daily sweep is skipped, then re-reads of claims running for long, then other re-reads, comments
wait, and new approvals go last. At the budget a run makes no metered call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from dingtalk_kingdee.pipeline.protocols import DingTalkClient
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import CallLedger, month_of

NEAR_SHARE = 0.8
UNMETERED = frozenset({"gettoken"})
QUOTA_EXHAUSTED = "quota_exhausted"
BUDGET_NEAR = "budget_near"
BUDGET_REACHED = "budget_reached"


def metered(counts: Mapping[str, int]) -> int:
    return sum(n for api, n in counts.items() if api not in UNMETERED)


def ledger_time(run: Run) -> datetime:
    """When this run's calls count: a scheduled run's interval end (it runs right after it, and a
    benchmark's simulated month uses it), an event-triggered run's ``run_after`` (its window end, when
    its events came), else the clock (a backfill of last month spends this month's)."""
    if (run.scheduled or run.event_triggered) and run.window_end is not None:
        return run.window_end
    return datetime.now(UTC)


@dataclass(frozen=True)
class CallBudget:
    """The month's metered calls before this step (``used_before``) against ``budget``."""

    month: str
    budget: int
    used_before: int

    @classmethod
    def of(cls, engine: Engine, scheme: Scheme, run: Run) -> CallBudget:
        month = month_of(ledger_time(run))
        return cls(month, scheme.source.monthly_call_budget, CallLedger(engine).month_total(month))

    def remaining(self, spent: int = 0) -> int:
        """Metered calls still allowed after ``spent`` calls of this step."""
        return max(0, self.budget - self.used_before - spent)

    def near(self, spent: int = 0) -> bool:
        return self.used_before + spent >= NEAR_SHARE * self.budget

    def state(self, spent: int = 0) -> str:
        used = self.used_before + spent
        if used >= self.budget:
            return "reached"
        return "near" if self.near(spent) else "ok"


class StepCalls:
    """The calls one step makes through ``dingtalk``, written to the ledger by ``record``."""

    def __init__(self, engine: Engine, scheme: Scheme, run: Run, step: str, dingtalk: DingTalkClient) -> None:
        self.engine, self.scheme, self.run, self.step, self.dingtalk = engine, scheme, run, step, dingtalk
        self._before = dict(dingtalk.call_counts())

    def so_far(self) -> dict[str, int]:
        now = self.dingtalk.call_counts()
        return {api: n - self._before.get(api, 0) for api, n in now.items() if n - self._before.get(api, 0)}

    def metered(self) -> int:
        return metered(self.so_far())

    def record(self) -> dict[str, int]:
        """Write this step's calls to the ledger (dry runs too: they were made); returns them."""
        calls = self.so_far()
        CallLedger(self.engine).record(self.scheme.id, self.run.run_id, self.step, calls, ledger_time(self.run))
        return calls


def note_quota_exhausted(engine: Engine, scheme: Scheme, run: Run, error: Exception) -> bool:
    """Record the month's 90020; True the first time this month (alert then, once)."""
    month = month_of(ledger_time(run))
    return CallLedger(engine).note_event(month, QUOTA_EXHAUSTED, scheme.id, run.run_id, str(error)[:500],
                                         ledger_time(run))


def quota_spent(engine: Engine, run: Run) -> bool:
    """Whether a 90020 was met this month and no DingTalk call has succeeded since."""
    return CallLedger(engine).event(month_of(ledger_time(run)), QUOTA_EXHAUSTED) is not None


def quota_back(engine: Engine, run: Run) -> None:
    """A DingTalk call succeeded: a 90020 noted this month is over (a pack was bought, say)."""
    month = month_of(ledger_time(run))
    ledger = CallLedger(engine)
    if ledger.event(month, QUOTA_EXHAUSTED) is not None:
        ledger.clear_event(month, QUOTA_EXHAUSTED, ledger_time(run))


def call_figures(engine: Engine, scheme: Scheme, run: Run) -> dict:
    """This run's DingTalk calls and the month's total against the budget, read only (no event noted).

    ``state``: ok / near / reached / quota_exhausted.
    """
    ledger = CallLedger(engine)
    month = month_of(ledger_time(run))
    run_calls = ledger.run_calls(scheme.id, run.run_id)
    total = ledger.month_total(month)
    budget = scheme.source.monthly_call_budget
    state = CallBudget(month, budget, total).state()
    if ledger.event(month, QUOTA_EXHAUSTED) is not None:
        state = QUOTA_EXHAUSTED
    return {"run": run_calls, "run_total": metered(run_calls), "month": month, "month_total": total,
            "month_by_api": ledger.month_by_api(month), "budget": budget, "state": state}


def call_summary(engine: Engine, scheme: Scheme, run: Run) -> dict:
    """``call_figures`` for the report and XCom, with ``alert``: the budget or quota event this run was
    the first of the month to meet (the report alerts once on it), else None.
    """
    figures = call_figures(engine, scheme, run)
    ledger, month, state = CallLedger(engine), figures["month"], figures["state"]
    alert = None
    if state == QUOTA_EXHAUSTED:
        exhausted = ledger.event(month, QUOTA_EXHAUSTED)
        if exhausted is not None and exhausted.run_id == run.run_id:
            alert = QUOTA_EXHAUSTED
    elif state in ("near", "reached"):
        kind = BUDGET_REACHED if state == "reached" else BUDGET_NEAR
        if ledger.note_event(month, kind, scheme.id, run.run_id, f"{figures['month_total']} of {figures['budget']}",
                             ledger_time(run)):
            alert = kind
    return {**figures, "alert": alert}


def call_line(calls: dict, run_id: str | None = None) -> str:
    """The report's line on DingTalk calls (naming the run when given)."""
    per_api = ", ".join(f"{api} {n}" for api, n in sorted(calls["run"].items())) or "none"
    which = f" ({run_id})" if run_id else ""
    return (f"  DingTalk calls{which}: this run {calls['run_total']} metered ({per_api}); month {calls['month']}: "
            f"{calls['month_total']} of the budget {calls['budget']} ({calls['state']})")


def call_alert_message(scheme_id: str, calls: dict) -> tuple[str, str]:
    """The alert (title, markdown) for the month's first budget or quota event."""
    if calls["alert"] == QUOTA_EXHAUSTED:
        title = f"DingTalk monthly call quota exhausted ({scheme_id})"
        what = ("DingTalk answered errcode 90020: the organisation's monthly quota of metered API calls is "
                "spent (every app and integration of the company shares it) until the 1st of next month. "
                "The sync makes no more DingTalk calls this month except one probe per run; bills already "
                "extracted are still loaded. Raise the quota (a paid plan or an add-on pack) to resume.")
    else:
        reached = calls["alert"] == BUDGET_REACHED
        title = f"DingTalk call budget {'reached' if reached else 'nearly spent'} ({scheme_id})"
        what = ("The sync degrades in this order: daily sweep, re-reads of long-running claims, other re-reads, "
                "comments; new approvals last." if calls["alert"] == BUDGET_NEAR else
                "The sync makes no DingTalk call until next month or until monthly_call_budget is raised.")
    return title, (f"### {title}\n\n{calls['month_total']} metered DingTalk calls in {calls['month']} "
                   f"against a budget of {calls['budget']}.\n\n{what}")
