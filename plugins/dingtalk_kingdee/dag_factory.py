"""Builds one Airflow DAG per scheme file. The only module that shapes Airflow objects.

The tasks only wire hooks, staging and the run's parameters to ``pipeline``; no business logic here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from dingtalk_kingdee import pipeline, staging
from dingtalk_kingdee.notifications import DingTalkRobotNotifier
from dingtalk_kingdee.scheme import Scheme, load_schemes
from dingtalk_kingdee.settings import get_settings

TIMEZONE = "Asia/Shanghai"

DOC_TEMPLATE = """\
### {title}

{description}

Every hour this DAG re-lists the DingTalk approvals of template `{process_code}` started in the last
{lookback_days} days (claims are selected by START time and often approved days later), fetches the
details of those not yet final (and of every stored claim still running, however old), and turns each
fully approved claim (COMPLETED / agree) into one
Kingdee `{form_id}` bill through BatchSave on connection `{kingdee_conn_id}`.

**Tasks** `extract` → `transform` → `load` → `write_back` → `report`; data sits in the staging tables
(`dk_instances`, `dk_rows`, `dk_bills`, `dk_rejects`, `dk_writeback`), XCom carries counts only.

**Safe to replay.** Clear any task, or the whole run, or backfill a period: a claim becomes a bill at
most once. A bill is marked `sending` before its BatchSave call; a bill whose answer was lost is looked
up in Kingdee by `{match_field}` before anything is sent again.

**Trigger form**
- `dry_run`: extract and transform only; the report says what would be written; nothing reaches Kingdee.
- `window_start` / `window_end`: list claims started in this window instead of the look-back window.
- `instance_ids`: sync exactly these approval instances.
- `replay_rejected`: transform rejected and refused claims again (after fixing a value map), then load.

**Backfill** from the UI (Backfill) or `airflow backfill create --dag-id {dag_id} --from-date ... --to-date ...`.
Rejected claims and their reasons are in the `report` task log and table `dk_rejects`.
"""


def _parse_time(value, default: datetime) -> datetime:
    if value in (None, ""):
        return default
    parsed = pendulum.parse(str(value), tz=TIMEZONE)
    if not isinstance(parsed, datetime):
        raise ValueError(f"{value!r} is not a date-time")
    return parsed


def run_from_context(scheme: Scheme) -> pipeline.Run:
    """What this run was asked to do, from its parameters and data interval."""
    ctx = get_current_context()
    params = ctx["params"]
    interval_end = ctx.get("data_interval_end") or pendulum.now(TIMEZONE)
    end = _parse_time(params.get("window_end"), interval_end)
    start = _parse_time(params.get("window_start"), end - timedelta(days=scheme.source.lookback_days))
    if start >= end:
        raise ValueError(f"window_start {start} is not before window_end {end}")
    return pipeline.Run(
        run_id=ctx["dag_run"].run_id,
        window_start=start,
        window_end=end,
        dry_run=bool(params.get("dry_run")),
        instance_ids=pipeline.select_ids(params.get("instance_ids")),
        replay_rejected=bool(params.get("replay_rejected")),
    )


def _engine():
    return staging.connect(get_settings().staging_database_url)


def build_dag(scheme: Scheme) -> DAG:
    from dingtalk_kingdee.hooks.dingtalk import DingTalkHook
    from dingtalk_kingdee.hooks.kingdee import KingdeeHook

    dag_id = f"dingtalk_kingdee_{scheme.id}"
    doc = DOC_TEMPLATE.format(
        title=scheme.title, description=scheme.description or "", process_code=scheme.source.process_code,
        lookback_days=scheme.source.lookback_days, form_id=scheme.target.form_id,
        kingdee_conn_id=scheme.target.kingdee_conn_id, match_field=scheme.target.match_field, dag_id=dag_id,
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
        schedule=CronDataIntervalTimetable("0 * * * *", timezone=TIMEZONE),
        start_date=pendulum.datetime(2024, 1, 1, tz=TIMEZONE),
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        tags=["dingtalk", "kingdee", "expense", scheme.id],
        params={
            "dry_run": Param(False, type="boolean", title="Dry run",
                             description="Extract and transform only; write nothing to Kingdee."),
            "window_start": Param(None, type=["null", "string"], format="date-time", title="Window start",
                                  description="List claims started from this time (default: interval end "
                                              "minus the scheme's look-back)."),
            "window_end": Param(None, type=["null", "string"], format="date-time", title="Window end",
                                description="List claims started before this time (default: interval end)."),
            "instance_ids": Param([], type="array", items={"type": "string"}, title="Instance ids",
                                  description="Sync exactly these DingTalk approval instances."),
            "replay_rejected": Param(False, type="boolean", title="Replay rejected",
                                     description="Transform rejected and refused claims again, e.g. after "
                                                 "fixing a value map."),
        },
        render_template_as_native_obj=True,
    ) as dag:

        @task(task_id="extract")
        def extract() -> dict:
            run = run_from_context(scheme)
            return pipeline.extract(scheme, DingTalkHook(scheme.source.dingtalk_conn_id), _engine(), run)

        @task(task_id="transform")
        def transform() -> dict:
            return pipeline.transform(scheme, _engine(), run_from_context(scheme))

        @task(task_id="load")
        def load() -> dict:
            return pipeline.load(scheme, KingdeeHook(scheme.target.kingdee_conn_id), _engine(),
                                 run_from_context(scheme))

        @task(task_id="write_back", trigger_rule="all_done")
        def write_back() -> dict:
            return pipeline.write_back(scheme, DingTalkHook(scheme.source.dingtalk_conn_id), _engine(),
                                       run_from_context(scheme))

        @task(task_id="report", trigger_rule="all_done")
        def report() -> dict:
            ctx = get_current_context()
            run = run_from_context(scheme)
            steps = {tid: ctx["ti"].xcom_pull(task_ids=tid) for tid in ("extract", "transform", "load", "write_back")}
            summary = pipeline.report(scheme, _engine(), run, steps)
            alert = DingTalkRobotNotifier.for_rejects(scheme.id, run.run_id, summary)
            if alert and not run.dry_run:
                try:
                    alert.notify(ctx)  # notify, not __call__: the reject reasons are data, not templates
                except Exception as exc:  # an alert must not fail the report
                    summary["alert_error"] = str(exc)
            summary.pop("text", None)
            return summary

        extract() >> transform() >> load() >> write_back() >> report()
    return dag


def build_all(schemes_dir: Path | None = None) -> dict[str, DAG]:
    """One DAG per scheme file in the schemes folder, keyed by DAG id."""
    folder = schemes_dir or get_settings().schemes_dir
    dags = {}
    for scheme in load_schemes(folder):
        dag = build_dag(scheme)
        dags[dag.dag_id] = dag
    return dags
