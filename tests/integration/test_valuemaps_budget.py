"""The call budget before a value-map suggestion, on real staging SQL: refused at the budget, a warning
near it, and never in the way of a suggestion that makes no DingTalk call (expense items only)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dingtalk_kingdee import staging
from dingtalk_kingdee.errors import DingTalkCallBudgetReached
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import load_scheme
from dingtalk_kingdee.valuemaps.run import check_budget, run_id_for

SCHEME_FILE = Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml"


def spend(engine, calls: int) -> None:
    staging.CallLedger(engine).record("other", "scheduled__x", "extract", {"processinstance/get": calls},
                                      datetime.now(UTC))


def test_refused_at_the_budget_warned_near_it(engine, caplog) -> None:
    scheme = load_scheme(SCHEME_FILE)
    budget = scheme.source.monthly_call_budget
    run = Run(run_id=run_id_for())
    check_budget(engine, scheme, run)  # an empty month: nothing to say
    spend(engine, int(budget * 0.8))
    with caplog.at_level(logging.WARNING, logger="dingtalk_kingdee.valuemaps.run"):
        check_budget(engine, scheme, run)
    assert f"{int(budget * 0.8)} of the {budget} metered DingTalk calls" in caplog.text
    spend(engine, budget - int(budget * 0.8))
    reached = rf"scheme expense_to_paybill: .* \({budget} of {budget} metered calls\)"
    with pytest.raises(DingTalkCallBudgetReached, match=reached):
        check_budget(engine, scheme, run)


def test_a_suggestion_without_contacts_is_never_refused(engine) -> None:
    scheme = load_scheme(SCHEME_FILE)
    items_only = scheme.model_copy(update={"value_maps": {
        name: spec if name == "expense_items" else spec.model_copy(update={"suggest": None})
        for name, spec in scheme.value_maps.items()}})
    spend(engine, scheme.source.monthly_call_budget * 2)
    check_budget(engine, items_only, Run(run_id=run_id_for()))


def test_run_ids_say_what_they_were() -> None:
    assert run_id_for("manual__2026-11-30T10:00:00+00:00") == "valuemaps__manual__2026-11-30T10:00:00+00:00"
    assert run_id_for(now=datetime(2026, 11, 30, 3, 4, 5, tzinfo=UTC)) == "valuemaps__2026-11-30T03:04:05Z"
