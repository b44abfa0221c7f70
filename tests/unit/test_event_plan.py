"""An event-triggered run's plan: the claims named by its approval events, from the payloads alone."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest
from airflow.sdk import Asset

from dingtalk_kingdee.dag_factory import plan_run, scheme_event_payloads
from dingtalk_kingdee.errors import SchemeError
from dingtalk_kingdee.pipeline import Run
from dingtalk_kingdee.scheme import load_scheme

ROOT = Path(__file__).resolve().parents[2]
SCHEME = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")
CODE = SCHEME.source.process_code
RUN_AFTER = pendulum.datetime(2026, 3, 5, 10, 17, 42, tz="UTC")
PARAMS = {"dry_run": False, "window_start": None, "window_end": None, "instance_ids": [], "replay_rejected": False}


def event(instance_id: str, kind: str = "finish", result: str | None = "agree", code: str = CODE) -> dict:
    return {"instance_id": instance_id, "business_id": f"B-{instance_id}", "type": kind, "result": result,
            "event_id": f"ev-{instance_id}-{kind}", "process_code": code, "finish_time": 1709686862000}


def plan(payloads: list) -> Run:
    return plan_run(SCHEME, "asset_triggered__2026-03-05T10:17:42", PARAMS, None, RUN_AFTER, "asset_triggered",
                    event_payloads=payloads)


def test_the_run_syncs_exactly_the_claims_of_its_events_duplicates_collapsed():
    run = plan([event("i-2"), event("i-1"), event("i-2"), event("i-3", result="refuse")])
    assert run.instance_ids == ("i-2", "i-1", "i-3")
    assert (run.events, run.withdrawn_ids, run.trigger) == (4, (), "asset_triggered")
    assert run.event_triggered and not run.scheduled
    assert run.window_end == RUN_AFTER  # no data interval: "now" is when the run was due, never the clock


def test_terminate_and_delete_events_name_claims_that_are_not_read_unless_they_also_finished():
    run = plan([event("i-1", "terminate", None), event("i-2", "delete", None), event("i-3", "terminate", None),
                event("i-3", "finish", "agree")])
    assert run.instance_ids == ("i-3",)
    assert run.withdrawn_ids == ("i-1", "i-2")
    assert run.events == 4


def test_events_of_another_process_code_and_payloads_without_an_instance_id_are_left_out():
    run = plan([event("i-1"), event("i-9", code="PROC-OTHER"), None, {"type": "finish"}, {"instance_id": " "}])
    assert run.instance_ids == ("i-1",)
    assert run.events == 1


def test_an_event_run_with_nothing_to_read_names_no_claim_and_never_lists():
    run = plan([])
    assert run.instance_ids == () and run.withdrawn_ids == () and run.events == 0
    assert Run.from_xcom(run.to_xcom()) == run  # () survives XCom: not None, which would mean "list the window"
    assert "0 approval events" in run.window_text()


def test_the_plan_goes_through_xcom_unchanged():
    run = plan([event("i-1"), event("i-2", "terminate", None)])
    assert Run.from_xcom(run.to_xcom()) == run


def test_runs_not_triggered_by_events_carry_their_trigger_and_no_events():
    run = plan_run(SCHEME, "scheduled__x", PARAMS, RUN_AFTER, RUN_AFTER, "scheduled")
    assert (run.events, run.event_triggered, run.trigger, run.scheduled) == (None, False, "scheduled", True)


def test_only_the_schemes_own_asset_events_are_taken():
    ours = Asset(name="dingtalk_approvals__expense_to_paybill", uri="x-dingtalk-approvals://expense_to_paybill")
    other = Asset(name="dingtalk_approvals__other", uri="x-dingtalk-approvals://other")
    triggering = {ours: [SimpleNamespace(extra={"from_trigger": True, "payload": event("i-1")}),
                         SimpleNamespace(extra={"from_trigger": True, "payload": event("i-2")})],
                  other: [SimpleNamespace(extra={"from_trigger": True, "payload": event("i-9")})]}
    assert [p["instance_id"] for p in scheme_event_payloads(triggering, ours)] == ["i-1", "i-2"]
    assert scheme_event_payloads({other: triggering[other]}, ours) == []
    assert scheme_event_payloads(None, ours) == []
    # An asset event without a payload (not from the trigger) names nothing.
    assert plan(scheme_event_payloads({ours: [SimpleNamespace(extra={})]}, ours)).instance_ids == ()


def _scheme_with(tmp_path: Path, events_yaml: str) -> Path:
    text = (ROOT / "include" / "schemes" / "expense_to_paybill.yaml").read_text(encoding="utf-8")
    folder = tmp_path / "schemes"
    folder.mkdir()
    (folder / "expense_to_paybill").symlink_to(ROOT / "include" / "schemes" / "expense_to_paybill")
    path = folder / "expense_to_paybill.yaml"
    path.write_text(text + "\n" + events_yaml, encoding="utf-8")
    return path


def test_events_are_off_unless_the_scheme_turns_them_on(tmp_path):
    assert SCHEME.events.enabled is False
    scheme = load_scheme(_scheme_with(tmp_path, "events:\n  enabled: true\n  safety_reread_hours: 24\n"))
    assert scheme.events.enabled and scheme.events.safety_reread_hours == 24
    assert scheme.events.safety_reread_cap_hours >= 24


@pytest.mark.parametrize(("events_yaml", "message"), [
    ("events:\n  enabled: true\n  polling: 5\n", "events.polling: Extra inputs are not permitted"),
    ("events:\n  safety_reread_hours: 100\n  safety_reread_cap_hours: 50\n", "events: .*below safety_reread_hours"),
    ("events:\n  listing_every_hours: 0\n", "events.listing_every_hours"),
    ("events:\n  enabled: maybe\n", "events.enabled"),
])
def test_a_wrong_events_setting_is_refused_naming_the_key(tmp_path, events_yaml, message):
    with pytest.raises(SchemeError, match=message):
        load_scheme(_scheme_with(tmp_path, events_yaml))


def _events_dagbag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events_yaml: str):
    from airflow.dag_processing.dagbag import DagBag

    path = _scheme_with(tmp_path, events_yaml)
    monkeypatch.setenv("DK_SCHEMES_DIR", str(path.parent))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["dingtalk_kingdee_expense_to_paybill"]


def test_with_events_on_the_dag_runs_hourly_or_on_its_approval_events(tmp_path, monkeypatch):
    from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable

    from dingtalk_kingdee.events.trigger import ApprovalEventTrigger

    dag = _events_dagbag(tmp_path, monkeypatch, "events:\n  enabled: true\n")
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    hourly = dag.timetable.timetable
    assert isinstance(hourly, CronDataIntervalTimetable) and hourly.expression == "0 * * * *"
    asset = dag.timetable.asset_condition
    assert isinstance(asset, Asset)
    assert (asset.name, asset.uri) == ("dingtalk_approvals__expense_to_paybill",
                                       "x-dingtalk-approvals://expense_to_paybill")
    [watcher] = asset.watchers
    assert isinstance(watcher.trigger, ApprovalEventTrigger)
    assert watcher.trigger.serialize()[1] == {"dingtalk_conn_id": SCHEME.source.dingtalk_conn_id,
                                              "process_code": CODE}
    # What the scheduler and the triggerer get: the serialized DAG names the trigger class and its kwargs.
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.to_dict(dag)["dag"]["timetable"]["__var"]
    assert serialized["asset_condition"]["watchers"][0]["trigger"] == {
        "classpath": "dingtalk_kingdee.events.trigger.ApprovalEventTrigger",
        "kwargs": {"dingtalk_conn_id": SCHEME.source.dingtalk_conn_id, "process_code": CODE}}
    assert "Event mode is on" in dag.doc_md
    assert [t.task_id for t in dag.topological_sort()] == ["plan", "extract", "transform", "load", "write_back",
                                                           "report"]


def test_with_events_off_the_dag_keeps_its_hourly_timetable(tmp_path, monkeypatch):
    from airflow.sdk import CronDataIntervalTimetable

    dag = _events_dagbag(tmp_path, monkeypatch, "events:\n  enabled: false\n")
    assert isinstance(dag.timetable, CronDataIntervalTimetable) and dag.timetable.expression == "0 * * * *"
    assert "Event mode" not in dag.doc_md


class StoredEvents:
    """What a task's ``inlet_events[asset]`` offers: the asset's stored events, ``after(time)``."""

    def __init__(self, events: list[tuple[pendulum.DateTime, dict]]) -> None:
        self.events = events

    def after(self, moment: str) -> list:
        return [SimpleNamespace(timestamp=t, extra={"from_trigger": True, "payload": p})
                for t, p in self.events if t >= pendulum.parse(moment)]


def test_events_stored_after_the_run_was_due_and_in_the_span_before_are_the_runs_too():
    """Airflow hands a run the events up to the first one queued for it; those stored later, before
    the run was created (a burst, or a run still running), would wait for another event; one stored
    while the run before was created would wait for ever."""
    from dingtalk_kingdee.dag_factory import catch_up_since, recent_event_payloads

    ours = Asset(name="dingtalk_approvals__expense_to_paybill", uri="x-dingtalk-approvals://expense_to_paybill")
    stored = StoredEvents([(RUN_AFTER.subtract(hours=3), event("i-old")), (RUN_AFTER.subtract(seconds=30),
                           event("i-0")), (RUN_AFTER, event("i-1")), (RUN_AFTER.add(seconds=1), event("i-2")),
                           (RUN_AFTER.add(seconds=9), event("i-3"))])
    since = catch_up_since(SCHEME, RUN_AFTER)
    recent = recent_event_payloads({ours: stored}, ours, since)
    assert [p["instance_id"] for p in recent] == ["i-0", "i-1", "i-2", "i-3"]
    assert recent_event_payloads(None, ours, since) == []
    triggering = {ours: [SimpleNamespace(extra={"from_trigger": True, "payload": event("i-1")})]}
    run = plan_run(SCHEME, "asset_triggered__x", PARAMS, None, RUN_AFTER, "asset_triggered",
                   event_payloads=scheme_event_payloads(triggering, ours), caught_up_payloads=recent)
    assert run.instance_ids == ("i-1", "i-0", "i-2", "i-3") and run.caught_up_ids == ("i-0", "i-2", "i-3")
    assert run.events == 1


# Asset events of the recent span that no run took (Airflow 3.3.2 drops an event recorded while the run
# for the one before is being created): every run of an event scheme takes their claims along.

def test_an_event_run_takes_the_claims_of_recent_asset_events_beside_its_own_duplicates_collapsed():
    run = plan_run(SCHEME, "asset_triggered__x", PARAMS, None, RUN_AFTER, "asset_triggered",
                   event_payloads=[event("i-1"), event("i-2", "terminate", None)],
                   caught_up_payloads=[event("i-1"), event("i-3"), event("i-3"), event("i-4", "delete", None),
                                       event("i-2", "terminate", None), event("i-9", code="PROC-OTHER")])
    assert run.instance_ids == ("i-1", "i-3")          # the steps work on both
    assert run.withdrawn_ids == ("i-2", "i-4")
    assert (run.caught_up_ids, run.caught_up_withdrawn_ids) == (("i-3",), ("i-4",))
    assert run.events == 2                              # the run's own events only
    assert Run.from_xcom(run.to_xcom()) == run
    assert "1 caught up from recent asset events" in run.window_text()


def test_a_claim_a_recent_event_finished_is_read_even_if_the_runs_own_event_only_withdrew_it():
    run = plan_run(SCHEME, "asset_triggered__x", PARAMS, None, RUN_AFTER, "asset_triggered",
                   event_payloads=[event("i-1", "terminate", None)], caught_up_payloads=[event("i-1")])
    assert (run.instance_ids, run.withdrawn_ids, run.caught_up_ids) == (("i-1",), (), ("i-1",))


def test_the_hourly_run_of_an_event_scheme_carries_the_recent_events_claims_and_still_lists_as_scheduled():
    run = plan_run(SCHEME, "scheduled__x", PARAMS, RUN_AFTER, RUN_AFTER, "scheduled",
                   caught_up_payloads=[event("i-1"), event("i-2", "terminate", None)])
    assert run.scheduled and not run.event_triggered and run.instance_ids is None
    assert (run.caught_up_ids, run.caught_up_withdrawn_ids) == (("i-1",), ("i-2",))
    assert Run.from_xcom(run.to_xcom()) == run


def test_runs_asked_for_a_window_or_named_claims_take_no_recent_events():
    manual = plan_run(SCHEME, "manual__x", {**PARAMS, "instance_ids": ["i-7"]}, RUN_AFTER, RUN_AFTER, "manual",
                      caught_up_payloads=[event("i-1")])
    assert (manual.instance_ids, manual.caught_up_ids) == (("i-7",), ())


def test_the_span_of_recent_asset_events_is_the_schemes_catch_up_hours_before_the_runs_time(tmp_path):
    from dingtalk_kingdee.dag_factory import catch_up_since

    assert SCHEME.events.catch_up_hours == 2  # the hour between hourly runs, and as much again
    assert catch_up_since(SCHEME, RUN_AFTER) == RUN_AFTER - pendulum.duration(hours=2)
    scheme = load_scheme(_scheme_with(tmp_path, "events:\n  enabled: true\n  catch_up_hours: 5\n"))
    assert catch_up_since(scheme, RUN_AFTER) == RUN_AFTER - pendulum.duration(hours=5)


@pytest.mark.parametrize("hours", [0, 49, "two"])
def test_a_catch_up_span_shorter_than_the_hour_between_hourly_runs_or_past_two_days_is_refused(tmp_path, hours):
    with pytest.raises(SchemeError, match=r"events\.catch_up_hours"):
        load_scheme(_scheme_with(tmp_path, f"events:\n  enabled: true\n  catch_up_hours: {hours}\n"))


def test_the_recent_events_are_read_from_the_plan_tasks_inlet_on_the_approval_asset(tmp_path, monkeypatch):
    dag = _events_dagbag(tmp_path, monkeypatch, "events:\n  enabled: true\n")
    [inlet] = dag.get_task("plan").inlets
    assert inlet == dag.timetable.asset_condition
    assert "no run took" in dag.doc_md
