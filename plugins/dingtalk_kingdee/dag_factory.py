"""Builds one Airflow DAG per scheme file. The only module that shapes Airflow objects.

The tasks only wire hooks, staging and the run's parameters to ``pipeline``; no business logic here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronDataIntervalTimetable,
    Param,
    chain,
    get_current_context,
    task,
)
from sqlalchemy.engine import Engine

from dingtalk_kingdee import pipeline, staging
from dingtalk_kingdee.errors import SchemeError
from dingtalk_kingdee.notifications import DingTalkRobotNotifier
from dingtalk_kingdee.pipeline.event_claims import EventClaims, caught_up, claims_of_events
from dingtalk_kingdee.scheme import Scheme, load_schemes_apart
from dingtalk_kingdee.settings import get_settings

log = logging.getLogger(__name__)

TIMEZONE = "Asia/Shanghai"
# The tasks after ``plan`` whose counts the report lists.
STEP_TASKS = ("extract", "transform", "load", "write_back")

DOC_TEMPLATE = """\
### {title}

{description}

Every hour this DAG lists the DingTalk approvals of template `{process_code}` started since the last
successful listing (incremental listing; once a night, and on the first run, the whole {lookback_days}-day
look-back), reads each claim not yet final when its re-read is due (after 1 h, 2 h, 4 h ... up to a cap),
and turns each fully approved claim (COMPLETED / agree) into one
Kingdee `{form_id}` bill through BatchSave on connection `{kingdee_conn_id}`. DingTalk calls are metered
per month: the report shows this run's calls and the month's total against the scheme's budget.

**Tasks** `plan` → `extract` → `transform` → `load` → `write_back` → `report`. `plan` fixes the run's
window and options once; every step works to that plan. Data sits in the staging tables (`dk_instances`,
`dk_rows`, `dk_bills`, `dk_rejects`, `dk_writeback`); XCom carries the plan and counts only.

**Safe to replay.** Clear any task, or the whole run, or backfill a period: a claim becomes a bill at
most once. A bill is marked `sending` before its BatchSave call; a bill whose answer was lost is looked
up in Kingdee by `{match_field}` before anything is sent again.

**Trigger form**
- `dry_run`: extract and transform only; the report says what would be written; nothing reaches Kingdee.
- `window_start` / `window_end`: China time, `YYYY-MM-DD HH:MM`; list claims started in this window
  instead of the look-back window (which ends at the data interval end; for a run triggered without a
  logical date, at the time the run was due). The `plan` log states the window in China time.
- `instance_ids`: sync exactly these approval instances.
- `replay_rejected`: transform every rejected and refused claim again (after a fix in Kingdee), then load.
  A value-map or mapping change needs none: the next run retries the claims rejected for a value map.

{events_doc}
**Backfill** from the UI (Backfill) or `airflow backfill create --dag-id {dag_id} --from-date ... --to-date ...`.
Rejected claims and their reasons are in the `report` task log and table `dk_rejects`.
"""


EVENTS_DOC = """\
**Event mode is on.** The DAG also runs on DingTalk approval events (Stream mode, asset `{asset}`, watched
in the triggerer by `ApprovalEventTrigger` on connection `{dingtalk_conn_id}`): a claim's finish event
starts a run that reads and bills exactly the claims its events name, within a minute of the approval.
The hourly runs then list new claims every {listing_every_hours} h and read a claim whose event never came
{safety_reread_hours} h after it was listed (then doubling up to {safety_reread_cap_hours} h); the
nightly sweep lists the last {sweep_window_days} days, and the whole look-back every {sweep_every_days} days.
Airflow can record an event while it creates the run for the one before and then start no run for it:
every run (event or hourly) therefore also takes the claims of the asset's events of the last
{catch_up_hours} h (read by `plan` through its inlet) and reads those staging does not hold final, so a
claim whose event no run took is billed by the next event run, at the latest by the next hourly run.
The run's trigger and its events are in the `plan` and `report` logs.
"""

# Airflow's run type of a run created from asset events (the scheduler's DagRunType.ASSET_TRIGGERED).
ASSET_TRIGGERED = "asset_triggered"


def run_type_name(run_type: object) -> str:
    """A run's type as Airflow names it ("scheduled", "asset_triggered", ...). A task gets the Task
    SDK's DagRunType, a str enum whose str() is "DagRunType.SCHEDULED", not its value."""
    return str(getattr(run_type, "value", run_type) or "")


def approval_asset(scheme: Scheme) -> Asset:
    """The asset the scheme's approval events update: one per scheme, watched by the approval event
    trigger of its DingTalk app and process code. Airflow 3.3 takes any asset name but ``self`` and
    ``context`` (at most 1,500 characters) and leaves an ``x-`` URI as written (other schemes are
    normalised, ``airflow`` is reserved)."""
    from dingtalk_kingdee.events.trigger import ApprovalEventTrigger

    name = f"dingtalk_approvals__{scheme.id}"
    trigger = ApprovalEventTrigger(dingtalk_conn_id=scheme.source.dingtalk_conn_id,
                                   process_code=scheme.source.process_code)
    return Asset(name=name, uri=f"x-dingtalk-approvals://{scheme.id}",
                 watchers=[AssetWatcher(name=name, trigger=trigger)])


def scheme_event_payloads(triggering_asset_events: Mapping[Any, Sequence[Any]] | None, asset: Asset) -> list:
    """The payloads of the run's triggering events of ``asset`` (other assets' events are not this
    scheme's); each asset event's ``extra`` is ``{"from_trigger": True, "payload": {...}}``."""
    if not triggering_asset_events:
        return []
    return [_payload(event) for event in triggering_asset_events.get(asset, [])]


def _payload(asset_event: object) -> object:
    """The trigger's payload an asset event carries (``extra["payload"]``; None when it has none)."""
    return (getattr(asset_event, "extra", None) or {}).get("payload")


def recent_event_payloads(inlet_events: Mapping[Any, Any] | None, asset: Asset, since: datetime) -> list:
    """The payloads of ``asset``'s events stored since ``since``, whichever run took them, read through
    the plan task's inlet (the Task SDK's ``InletEventsAccessor``: the execution API, no ORM).

    Airflow 3.3 can leave an event to no run: it hands an event-triggered run only the events up to
    the first one queued for it (its ``run_after``), so events stored after that and before the run was
    created (a burst within one scheduler loop, or events that came while the previous run still ran,
    ``max_active_runs=1``) wait for another event (apache/airflow#56050); and an event stored while the
    scheduler creates a run loses its run-queue entry. The runs of an event scheme take the events of
    the last ``events.catch_up_hours`` along (``catch_up_since``); a claim staging holds final costs
    nothing. Logs how many of them no run took yet (``created_dagruns`` empty).
    """
    if not inlet_events:
        return []
    found = list(inlet_events[asset].after(since.isoformat()))
    untaken = sum(1 for event in found if not getattr(event, "created_dagruns", None))
    log.info("plan: %d asset events of %s since %s, %d of them taken by no run yet", len(found), asset.name,
             since.isoformat(), untaken)
    return [_payload(event) for event in found]


def _window_time(value: object, default: datetime | None, what: str) -> datetime:
    parsed = pipeline.form_time(value, what)
    if parsed is not None:
        return parsed
    if default is None:
        raise ValueError(f"no {what}: the run has no data interval and no run_after, and the "
                         f"trigger form gave none")
    return default


def _window_param(title: str, description: str) -> Param:
    """A window time typed as China time: a text field, not the date-time picker, which sends UTC."""
    return Param(None, type=["null", "string"], pattern=pipeline.FORM_TIME_PATTERN,
                 title=f"{title} (China time)", description=f"{pipeline.FORM_TIME_HINT}, e.g. 2026-03-01 08:00. "
                                                         f"{description}")


def catch_up_since(scheme: Scheme, now: datetime) -> datetime:
    """From when a run takes the scheme's asset events along beside its own: ``events.catch_up_hours``
    before the run's time (its data interval end, or when it was due)."""
    return now - timedelta(hours=scheme.events.catch_up_hours)


def plan_run(scheme: Scheme, run_id: str, params: Mapping[str, Any], data_interval_end: datetime | None,
             run_after: datetime | None, run_type: object = None,
             event_payloads: Iterable[object] | None = None,
             caught_up_payloads: Iterable[object] = ()) -> pipeline.Run:
    """What this run was asked to do, from its trigger-form parameters and its dates. Computed once,
    by the ``plan`` task; every step works to the same plan.

    The window ends at ``window_end``, else at the run's data interval end, else (a run triggered
    without a logical date has no data interval) at the run's ``run_after``: the time it was due,
    stored on the run, so a cleared plan task computes the same window again. Never the clock.
    A scheduled run with no window and no claims named is ``scheduled``: it lists incrementally.
    ``event_payloads`` (an event-triggered run's approval events) name the claims the run syncs; an
    event run never lists, even when its events name nothing to read. ``caught_up_payloads`` (with
    events on: the scheme's asset events of the last ``events.catch_up_hours``, whichever run took them)
    name claims an event-triggered or hourly run takes along, so an event no run took is billed by the
    next run; other runs (a window or claims asked for) leave them.
    """
    end = _window_time(params.get("window_end"), data_interval_end or run_after, "window_end")
    start = _window_time(params.get("window_start"), end - timedelta(days=scheme.source.lookback_days),
                         "window_start")
    if start >= end:
        raise ValueError(f"window_start {pipeline.china_time(start)} is not before window_end "
                         f"{pipeline.china_time(end)} (China time)")
    run_type = run_type_name(run_type)
    if event_payloads is not None:
        own = claims_of_events(event_payloads, scheme.source.process_code)
        claims = caught_up(own, claims_of_events(caught_up_payloads, scheme.source.process_code))
        return pipeline.Run(run_id=run_id, window_start=start, window_end=end, dry_run=bool(params.get("dry_run")),
                            instance_ids=claims.to_read, events=own.events, withdrawn_ids=claims.withdrawn,
                            trigger=run_type, caught_up_ids=claims.caught_up,
                            caught_up_withdrawn_ids=claims.caught_up_withdrawn)
    scheduled = (run_type == "scheduled" and params.get("window_start") in (None, "")
                 and params.get("window_end") in (None, "") and not params.get("instance_ids"))
    recent = caught_up(EventClaims(0, (), ()), claims_of_events(caught_up_payloads if scheduled else (),
                                                                scheme.source.process_code))
    return pipeline.Run(
        run_id=run_id,
        window_start=start,
        window_end=end,
        dry_run=bool(params.get("dry_run")),
        instance_ids=pipeline.select_ids(params.get("instance_ids")),
        replay_rejected=bool(params.get("replay_rejected")),
        scheduled=scheduled,
        trigger=run_type,
        caught_up_ids=recent.caught_up,
        caught_up_withdrawn_ids=recent.caught_up_withdrawn,
    )


def _hourly() -> CronDataIntervalTimetable:
    return CronDataIntervalTimetable("0 * * * *", timezone=TIMEZONE)


def _schedule(asset: Asset | None) -> CronDataIntervalTimetable | AssetOrTimeSchedule:
    """Hourly; with events on (the scheme's approval ``asset``), hourly OR its events (an
    asset-triggered run has no data interval: its plan's "now" is the run's ``run_after``)."""
    if asset is None:
        return _hourly()
    return AssetOrTimeSchedule(timetable=_hourly(), assets=asset)


def _events_doc(scheme: Scheme, asset: Asset | None) -> str:
    if asset is None:
        return ""
    events = scheme.events
    return EVENTS_DOC.format(asset=asset.name, dingtalk_conn_id=scheme.source.dingtalk_conn_id,
                             listing_every_hours=events.listing_every_hours,
                             safety_reread_hours=events.safety_reread_hours,
                             safety_reread_cap_hours=events.safety_reread_cap_hours,
                             sweep_every_days=events.sweep_every_days, sweep_window_days=events.sweep_window_days,
                             catch_up_hours=events.catch_up_hours)


def _engine() -> Engine:
    return staging.connect(get_settings().staging_database_url)


def build_dag(scheme: Scheme) -> DAG:
    from dingtalk_kingdee.hooks.dingtalk import DingTalkHook
    from dingtalk_kingdee.hooks.kingdee import KingdeeHook

    dag_id = f"dingtalk_kingdee_{scheme.id}"
    # With events on: the approval asset the DAG is scheduled on and the plan reads through its inlet.
    asset = approval_asset(scheme) if scheme.events.enabled else None
    doc = DOC_TEMPLATE.format(
        title=scheme.title, description=scheme.description or "", process_code=scheme.source.process_code,
        lookback_days=scheme.source.lookback_days, form_id=scheme.target.form_id,
        kingdee_conn_id=scheme.target.kingdee_conn_id, match_field=scheme.target.match_field, dag_id=dag_id,
        events_doc=_events_doc(scheme, asset),
    )
    settings = get_settings()
    default_args = {
        "owner": "finance-it",
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": DingTalkRobotNotifier(),
    }
    with DAG(
        dag_id=dag_id,
        description=scheme.title,
        doc_md=doc,
        schedule=_schedule(asset),
        start_date=pendulum.datetime(2024, 1, 1, tz=TIMEZONE),
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        tags=["dingtalk", "kingdee", "expense", scheme.id],
        params={
            "dry_run": Param(False, type="boolean", title="Dry run",
                             description="Extract and transform only; write nothing to Kingdee."),
            "window_start": _window_param("Window start", "List claims started from this time (default: "
                                                          "window end minus the scheme's look-back)."),
            "window_end": _window_param("Window end", "List claims started before this time (default: interval "
                                                      "end, or when the run was due if it has no interval)."),
            "instance_ids": Param([], type="array", items={"type": "string"}, title="Instance ids",
                                  description="Sync exactly these DingTalk approval instances."),
            "replay_rejected": Param(False, type="boolean", title="Replay rejected",
                                     description="Transform every rejected and refused claim again, e.g. "
                                                 "after a fix in Kingdee. (A value-map change needs no "
                                                 "replay: the next run retries those claims.)"),
        },
        render_template_as_native_obj=True,
    ) as dag:

        @task(task_id="plan", inlets=[asset] if asset is not None else [])
        def plan() -> dict:
            ctx = get_current_context()
            dag_run = ctx["dag_run"]
            run_type = getattr(dag_run, "run_type", None)
            payloads = None
            recent: list = []
            if asset is not None:
                if run_type_name(run_type) == ASSET_TRIGGERED:
                    payloads = scheme_event_payloads(ctx.get("triggering_asset_events"), asset)
                since = catch_up_since(scheme, ctx.get("data_interval_end") or dag_run.run_after)
                recent = recent_event_payloads(ctx.get("inlet_events"), asset, since)
            run = plan_run(scheme, dag_run.run_id, ctx["params"], ctx.get("data_interval_end"), dag_run.run_after,
                           run_type, event_payloads=payloads, caught_up_payloads=recent)
            log.info("plan: %s (trigger: %s)", run.window_text(), run.trigger or "unknown")
            return run.to_xcom()

        @task(task_id="extract")
        def extract(plan: dict) -> dict:
            return pipeline.extract(scheme, DingTalkHook(scheme.source.dingtalk_conn_id), _engine(),
                                    pipeline.Run.from_xcom(plan))

        @task(task_id="transform")
        def transform(plan: dict) -> dict:
            return pipeline.transform(scheme, _engine(), pipeline.Run.from_xcom(plan))

        @task(task_id="load")
        def load(plan: dict) -> dict:
            return pipeline.load(scheme, KingdeeHook(scheme.target.kingdee_conn_id), _engine(),
                                 pipeline.Run.from_xcom(plan))

        @task(task_id="write_back", trigger_rule="all_done")
        def write_back(plan: dict) -> dict:
            return pipeline.write_back(scheme, DingTalkHook(scheme.source.dingtalk_conn_id), _engine(),
                                       pipeline.Run.from_xcom(plan))

        @task(task_id="report", trigger_rule="all_done")
        def report(plan: dict) -> dict:
            ctx = get_current_context()
            run = pipeline.Run.from_xcom(plan)
            steps = {tid: ctx["ti"].xcom_pull(task_ids=tid) for tid in STEP_TASKS}
            # notify, not __call__: the problem texts are data, never templates
            summary = pipeline.report(scheme, _engine(), run, steps, alert=DingTalkRobotNotifier.sender(ctx))
            summary.pop("text", None)
            return summary

        # The plan goes to every step as an argument (XCom); the steps run one after the other.
        the_plan = plan()
        chain(extract(the_plan), transform(the_plan), load(the_plan), write_back(the_plan), report(the_plan))
    return dag


def build_all(schemes_dir: Path | None = None) -> dict[str, DAG]:
    """One DAG per scheme file in the schemes folder that loads, keyed by DAG id. A broken file is
    left out (``raise_scheme_errors`` reports it as an import error of its own DAG file)."""
    folder = schemes_dir or get_settings().schemes_dir
    schemes, errors = load_schemes_apart(folder)
    for error in errors.values():
        log.error("scheme left out: %s", error)
    dags = {}
    for scheme in schemes:
        dag = build_dag(scheme)
        dags[dag.dag_id] = dag
    return dags


def raise_scheme_errors(schemes_dir: Path | None = None) -> None:
    """Raise one ``SchemeError`` naming every scheme file that cannot be loaded, else nothing.

    Airflow marks every DAG of a file with an import error stale, so the broken schemes are raised
    from a DAG file of their own (``dags/dingtalk_kingdee_scheme_errors.py``), not from the file
    that builds the good schemes' DAGs: the import error names the broken file and what is wrong,
    and the other schemes' DAGs stay.
    """
    _, errors = load_schemes_apart(schemes_dir or get_settings().schemes_dir)
    if errors:
        raise SchemeError(f"{len(errors)} scheme file(s) cannot be loaded; their DAGs are left out:\n"
                          + "\n".join(str(e) for e in errors.values()))
