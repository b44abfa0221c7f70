"""The DingTalk calls a value-map suggestion spends are in the call ledger: under the scheme, a run id
``valuemaps__...`` and the step ``valuemaps``, equal to what the DingTalk emulator counted, and in the
month's total the sync's budget is checked against. A month whose budget is reached gets no contacts
calls; a spent quota (90020) is a clear error, never retried."""

from __future__ import annotations

from datetime import UTC, datetime

from dk_emulators.dingtalk.wire import API_PATHS

from dingtalk_kingdee import staging
from dingtalk_kingdee.scheme import load_scheme
from dingtalk_kingdee.valuemaps.cli import main
from tests.e2e.test_valuemaps import emptied_scheme

STEP = "valuemaps"


def hook_api(emulator_api: str) -> str:
    """The hook's name of an API (its path after ``/topapi/``) from the emulator's."""
    return API_PATHS[emulator_api].removeprefix("/").removeprefix("topapi/")


def spent_since(before: dict, after: dict) -> dict[str, int]:
    """Metered calls the emulator counted between two ``usage()`` snapshots, by the hook's API names."""
    return {hook_api(api): n - before["by_api"].get(api, 0) for api, n in after["by_api"].items()
            if n - before["by_api"].get(api, 0)}


def metered(calls: dict[str, int]) -> dict[str, int]:
    return {api: n for api, n in calls.items() if api not in staging.calls.UNMETERED_APIS}


def this_month() -> str:
    return staging.month_of(datetime.now(UTC))


def test_the_cli_records_its_contacts_calls_in_the_ledger_and_the_month_total(world_factory, tmp_path, capsys):
    world = world_factory(count=5)
    world.run()  # the sync's own calls of the month
    scheme_file = emptied_scheme(tmp_path)
    ledger, month = staging.CallLedger(world.engine), this_month()
    month_before = ledger.month_total(month)
    assert month_before > 0
    usage = world.dingtalk.usage()

    assert main(["suggest", "--scheme", str(scheme_file)]) == 0

    spent = spent_since(usage, world.dingtalk.usage())
    # The demo directory (root and six departments): one listsub and one user/list page each.
    assert spent == {"v2/department/listsub": 7, "v2/user/list": 7}
    [(run_id, calls)] = ledger.step_runs("expense_to_paybill", STEP, month).items()
    assert run_id.startswith("valuemaps__")
    assert metered(calls) == spent
    assert ledger.month_total(month) == month_before + 14
    out = capsys.readouterr().out
    assert f"DingTalk calls ({run_id}): this run 14 metered" in out
    assert f"month {month}: {month_before + 14} of the budget 5000 (ok)" in out


def test_a_month_at_its_budget_gets_no_contacts_calls(world_factory, tmp_path, capsys):
    world = world_factory(count=5)
    scheme_file = emptied_scheme(tmp_path)
    budget = load_scheme(scheme_file).source.monthly_call_budget
    ledger = staging.CallLedger(world.engine)
    ledger.record("another_scheme", "scheduled__x", "extract", {"processinstance/get": budget}, datetime.now(UTC))
    usage = world.dingtalk.usage()

    assert main(["suggest", "--scheme", str(scheme_file)]) == 3

    err = capsys.readouterr().err
    assert f"the DingTalk call budget of {this_month()} is reached ({budget} of {budget} metered calls)" in err
    assert "monthly_call_budget" in err
    assert spent_since(usage, world.dingtalk.usage()) == {}
    assert not (scheme_file.parent / "expense_to_paybill" / "employees.proposal.csv").exists()
    assert ledger.step_runs("expense_to_paybill", STEP, this_month()) == {}


def test_a_spent_quota_is_a_clear_error_recorded_and_never_retried(world_factory, tmp_path, capsys):
    world = world_factory(count=5)
    scheme_file = emptied_scheme(tmp_path)
    world.dingtalk.monthly_quota = world.dingtalk.usage()["used"] + 3
    ledger, month = staging.CallLedger(world.engine), this_month()

    assert main(["suggest", "--scheme", str(scheme_file)]) == 3

    err = capsys.readouterr().err
    assert "errcode 90020" in err and "monthly call quota" in err
    usage = world.dingtalk.usage()
    assert usage["refused"] == 1  # the first refusal stops the hook: no retry, no further call
    [(run_id, calls)] = ledger.step_runs("expense_to_paybill", STEP, month).items()
    assert sum(metered(calls).values()) == 3 + 1  # three answered, one refused: each was a request
    event = ledger.event(month, "quota_exhausted")
    assert event is not None and event.run_id == run_id
