"""The run's plan: computed once from the trigger form and the run's dates, carried through XCom."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest

from dingtalk_kingdee.dag_factory import ASSET_TRIGGERED, plan_run, run_type_name
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook
from dingtalk_kingdee.hooks.kingdee import KingdeeHook
from dingtalk_kingdee.pipeline import DingTalkClient, KingdeeClient, Run
from dingtalk_kingdee.scheme import load_scheme

SCHEME = load_scheme(Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml")
INTERVAL_END = pendulum.datetime(2026, 3, 5, 11, tz="Asia/Shanghai")
NO_PARAMS = {"dry_run": False, "window_start": None, "window_end": None, "instance_ids": [],
             "replay_rejected": False}


def test_the_window_ends_at_the_data_interval_end_and_looks_back_the_schemes_days():
    run = plan_run(SCHEME, "scheduled__x", NO_PARAMS, INTERVAL_END, run_after=INTERVAL_END + timedelta(minutes=3))
    assert run.window_end == INTERVAL_END
    assert run.window_end - run.window_start == timedelta(days=SCHEME.source.lookback_days)
    assert (run.dry_run, run.instance_ids, run.replay_rejected) == (False, None, False)


def test_a_run_without_a_data_interval_ends_its_window_when_it_was_due():
    run_after = pendulum.datetime(2026, 3, 5, 10, 17, tz="UTC")
    first = plan_run(SCHEME, "manual__x", NO_PARAMS, None, run_after)
    again = plan_run(SCHEME, "manual__x", NO_PARAMS, None, run_after)
    assert first.window_end == run_after
    assert again == first  # a cleared plan task plans the same window: no clock involved


def test_a_run_with_no_date_at_all_and_no_window_end_is_refused():
    with pytest.raises(ValueError, match="no window_end"):
        plan_run(SCHEME, "manual__x", NO_PARAMS, None, None)
    run = plan_run(SCHEME, "manual__x", {**NO_PARAMS, "window_end": "2026-03-01T00:00:00"}, None, None)
    assert run.window_end == pendulum.datetime(2026, 3, 1, tz="Asia/Shanghai")


def test_trigger_form_values_win_and_are_read_in_china_time():
    params = {"dry_run": True, "window_start": "2026-03-01 08:00", "window_end": "2026-03-02T00:00:00+00:00",
              "instance_ids": [" a ", "", "b"], "replay_rejected": True}
    run = plan_run(SCHEME, "manual__y", params, INTERVAL_END, None)
    assert run.window_start == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert run.window_end == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    assert (run.dry_run, run.instance_ids, run.replay_rejected) == (True, ("a", "b"), True)


def test_an_empty_or_backwards_window_is_refused():
    with pytest.raises(ValueError, match="not before"):
        plan_run(SCHEME, "manual__z", {**NO_PARAMS, "window_start": "2026-03-06T00:00:00"}, INTERVAL_END, None)


@pytest.mark.parametrize("run", [
    Run(run_id="r", window_start=datetime(2026, 3, 1, tzinfo=UTC), window_end=INTERVAL_END, dry_run=True,
        instance_ids=("PROC-1", "PROC-2"), replay_rejected=True),
    Run(run_id="bare"),
])
def test_the_plan_survives_xcom_as_plain_json(run):
    assert Run.from_xcom(json.loads(json.dumps(run.to_xcom()))) == run


def test_the_hooks_offer_what_the_pipeline_calls():
    assert issubclass(DingTalkHook, DingTalkClient)
    assert issubclass(KingdeeHook, KingdeeClient)


def _window_params():
    from dingtalk_kingdee.dag_factory import build_dag

    return build_dag(SCHEME).params


@pytest.mark.parametrize("name", ["window_start", "window_end"])
def test_the_trigger_form_asks_for_window_times_in_china_time_not_through_the_utc_picker(name):
    param = _window_params().get_param(name)
    # The date-time picker sends UTC ("...Z"): a text field in China time instead.
    assert param.schema.get("format") != "date-time"
    assert "China time" in param.schema["title"] and "YYYY-MM-DD HH:MM" in param.description
    for typed in ("2026-03-01 08:00", "2026-03-01 08:00:30", "2026-03-01", "2026-03-01T08:00:00+08:00", "", None):
        assert param.resolve(typed) == typed
    for wrong in ("03/01/2026 08:00", "tomorrow", "2026-03-01 8am"):
        with pytest.raises(Exception):  # noqa: B017 - Airflow's ParamValidationError
            param.resolve(wrong)


def test_a_window_typed_in_the_form_is_china_time_and_the_plan_states_it_so():
    params = {**NO_PARAMS, "window_start": "2026-03-01 08:00", "window_end": "2026-03-02"}
    run = plan_run(SCHEME, "manual__w", params, INTERVAL_END, None)
    assert run.window_start == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert run.window_end == datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
    assert run.window_text() == ("claims started from 2026-03-01 08:00:00 to 2026-03-02 00:00:00 "
                                 "China time (Asia/Shanghai)")
    # A time with its zone (the REST API, an old form) means that instant, shown in China time.
    utc = plan_run(SCHEME, "manual__w", {**params, "window_end": "2026-03-01T16:00:00Z"}, INTERVAL_END, None)
    assert utc.window_end == run.window_end and "to 2026-03-02 00:00:00 China time" in utc.window_text()
    scheduled = Run(run_id="scheduled__x", window_start=run.window_start, window_end=run.window_end, scheduled=True)
    assert scheduled.window_text().startswith(run.window_text() + "; a scheduled run")
    with pytest.raises(ValueError, match="window_start 'soon' is not a time: use YYYY-MM-DD HH:MM"):
        plan_run(SCHEME, "manual__w", {**params, "window_start": "soon"}, INTERVAL_END, None)


def test_only_the_dags_own_hourly_run_without_a_window_lists_incrementally():
    after = INTERVAL_END + timedelta(minutes=3)
    assert plan_run(SCHEME, "scheduled__x", NO_PARAMS, INTERVAL_END, after, "scheduled").scheduled
    assert not plan_run(SCHEME, "backfill__x", NO_PARAMS, INTERVAL_END, after, "backfill").scheduled
    assert not plan_run(SCHEME, "manual__x", NO_PARAMS, INTERVAL_END, after, "manual").scheduled
    windowed = {**NO_PARAMS, "window_start": "2026-03-01 00:00"}
    assert not plan_run(SCHEME, "scheduled__x", windowed, INTERVAL_END, after, "scheduled").scheduled
    named = {**NO_PARAMS, "instance_ids": ["abc"]}
    assert not plan_run(SCHEME, "scheduled__x", named, INTERVAL_END, after, "scheduled").scheduled
    run = plan_run(SCHEME, "scheduled__x", NO_PARAMS, INTERVAL_END, after, "scheduled")
    assert Run.from_xcom(run.to_xcom()) == run


def test_the_run_type_a_task_gets_is_read_by_its_value():
    """In a task, ``dag_run.run_type`` is the Task SDK's DagRunType, whose str() is
    "DagRunType.SCHEDULED": the hourly run must still list incrementally, an event run use its events."""
    from airflow.sdk.api.datamodels._generated import DagRunType

    after = INTERVAL_END + timedelta(minutes=3)
    run = plan_run(SCHEME, "scheduled__x", NO_PARAMS, INTERVAL_END, after, DagRunType.SCHEDULED)
    assert run.scheduled and run.trigger == "scheduled"
    assert run_type_name(DagRunType.ASSET_TRIGGERED) == ASSET_TRIGGERED
    assert run_type_name("manual") == "manual" and run_type_name(None) == ""
