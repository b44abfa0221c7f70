"""A suggestion run wired to the real systems: the scheme's DingTalk and Kingdee connections, and the
expense-item options of the claims stored in staging. Shared by the CLI and the value-map DAG.

Its DingTalk calls (the contacts: metered) go to the call ledger like the sync's, under the scheme, a
run id ``valuemaps__...`` and the step ``valuemaps``, so the month's total and the budget include them.
A month whose budget is already reached gets no contacts calls (``DingTalkCallBudgetReached``); a
spent quota (90020) is recorded like the sync's and raised, never retried.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from dingtalk_kingdee import staging
from dingtalk_kingdee.errors import DingTalkCallBudgetReached, DingTalkQuotaExhausted
from dingtalk_kingdee.pipeline.call_budget import (
    CallBudget,
    StepCalls,
    call_figures,
    metered,
    note_quota_exhausted,
    quota_back,
)
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.settings import get_settings
from dingtalk_kingdee.valuemaps.model import MapKind
from dingtalk_kingdee.valuemaps.options import option_keys
from dingtalk_kingdee.valuemaps.suggest import SuggestResult, needs_contacts, suggest

log = logging.getLogger(__name__)

STEP = "valuemaps"  # the ledger's step of a suggestion run


def run_id_for(dag_run_id: str | None = None, now: datetime | None = None) -> str:
    """The ledger's run id of a suggestion: ``valuemaps__`` and the DAG run's id, or the UTC time."""
    return f"{STEP}__{dag_run_id or (now or datetime.now(UTC)).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def stored_options(scheme: Scheme, engine: Engine) -> dict[str, list[str]]:
    """Per expense-item map of the scheme, the keys found on the claims in staging."""
    names = [name for name, spec in scheme.value_maps.items() if spec.suggest == MapKind.EXPENSE_ITEM_NUMBER]
    if not names:
        return {}
    payloads = list(staging.SchemeStaging(engine, scheme.id).stored_answers())
    return {name: option_keys(scheme, name, payloads) for name in names}


def check_budget(engine: Engine, scheme: Scheme, run: Run) -> None:
    """Refuse a suggestion that would read the contacts in a month whose budget is reached: the sync makes
    no metered call then either. Near the budget it only warns: a suggestion is a few calls per department,
    made once when going live and when people change; it is never cut off half way (a half-read
    directory would propose wrong lines)."""
    if not needs_contacts(scheme):
        return
    budget = CallBudget.of(engine, scheme, run)
    state = budget.state()
    if state == "reached":
        raise DingTalkCallBudgetReached(
            f"scheme {scheme.id}: the DingTalk call budget of {budget.month} is reached ({budget.used_before} of "
            f"{budget.budget} metered calls): reading the contacts is refused. Wait for next month, or raise "
            f"source.monthly_call_budget in the scheme if the organisation's quota has room.")
    if state == "near":
        log.warning("scheme %s: %d of the %d metered DingTalk calls of %s are spent; reading the contacts "
                    "adds about two per department", scheme.id, budget.used_before, budget.budget, budget.month)


def suggest_for_scheme(scheme: Scheme, *, apply: bool = False, run_id: str | None = None) -> SuggestResult:
    """``suggest`` on the scheme's connections, its DingTalk calls written to the ledger under ``run_id``
    (default: ``run_id_for()``); raises ``DingTalkCallBudgetReached`` or ``DingTalkQuotaExhausted``."""
    from dingtalk_kingdee.hooks.dingtalk import DingTalkHook
    from dingtalk_kingdee.hooks.kingdee import KingdeeHook

    engine = staging.connect(get_settings().staging_database_url)
    run = Run(run_id=run_id or run_id_for())
    check_budget(engine, scheme, run)
    dingtalk = DingTalkHook(scheme.source.dingtalk_conn_id)
    calls = StepCalls(engine, scheme, run, STEP, dingtalk)
    try:
        result = suggest(scheme, dingtalk, KingdeeHook(scheme.target.kingdee_conn_id),
                         options=stored_options(scheme, engine), apply=apply)
    except DingTalkQuotaExhausted as exc:
        note_quota_exhausted(engine, scheme, run, exc)
        raise
    finally:
        made = calls.record()
    if metered(made):
        quota_back(engine, run)
    result.dingtalk_calls = {**call_figures(engine, scheme, run), "run_id": run.run_id}
    return result
