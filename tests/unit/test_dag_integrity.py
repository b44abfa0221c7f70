"""Every DAG imports cleanly and carries what an operator relies on."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import CronDataIntervalTimetable
from airflow.serialization.encoders import coerce_to_core_timetable

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


VALUEMAPS_PREFIX = "dingtalk_kingdee_valuemaps_"


@pytest.fixture(scope="module")
def full_dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture(scope="module")
def dagbag(full_dagbag: DagBag) -> SimpleNamespace:
    """The sync DAGs (the value-map DAGs are checked apart, below)."""
    dags = {i: d for i, d in full_dagbag.dags.items() if not i.startswith(VALUEMAPS_PREFIX)}
    return SimpleNamespace(dags=dags, dag_ids=list(dags), import_errors=full_dagbag.import_errors)


def test_one_manual_value_map_dag_per_scheme(full_dagbag):
    dag = full_dagbag.dags[f"{VALUEMAPS_PREFIX}expense_to_paybill"]
    assert dag.schedule is None and not dag.catchup and dag.max_active_runs == 1
    assert dag.params["apply"] is False
    assert [t.task_id for t in dag.tasks] == ["suggest"] and dag.tasks[0].owner == "finance-it"
    assert dag.doc_md and "apply" in dag.doc_md and "metered" in dag.doc_md


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG was built from include/schemes/"


def test_one_dag_per_scheme(dagbag):
    assert "dingtalk_kingdee_expense_to_paybill" in dagbag.dag_ids


def test_operational_attributes(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and "replay" in dag.doc_md.lower(), dag_id
        assert dag.tags, dag_id
        assert not dag.catchup, dag_id
        assert dag.max_active_runs == 1, dag_id
        assert set(dag.params.keys()) >= {"dry_run", "window_start", "window_end", "instance_ids", "replay_rejected"}
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", (dag_id, task.task_id)
            assert task.retries > 0, (dag_id, task.task_id)
            assert task.retry_exponential_backoff, (dag_id, task.task_id)
        assert [t.task_id for t in dag.topological_sort()] == [
            "plan", "extract", "transform", "load", "write_back", "report"]


def test_every_step_works_to_the_plan_task(dagbag):
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            if task.task_id != "plan":
                assert "plan" in task.upstream_task_ids, (dag_id, task.task_id)


def test_hourly_data_intervals_are_one_hour_wide_in_china_time(dagbag):
    for dag in dagbag.dags.values():
        assert isinstance(dag.timetable, CronDataIntervalTimetable)
        # The scheduler's side of the timetable, which computes the intervals: the SDK has no public
        # API for it, only this converter the DAG serializer uses.
        timetable = coerce_to_core_timetable(dag.timetable)
        run_after = pendulum.datetime(2026, 3, 5, 10, 30, tz="Asia/Shanghai")
        manual = timetable.infer_manual_data_interval(run_after=run_after)
        assert manual.end - manual.start == timedelta(hours=1)
        assert manual.end.in_timezone("Asia/Shanghai").minute == 0
        # With catch-up allowed, scheduled intervals follow each other without gap or overlap.
        nxt = timetable.next_dagrun_info(last_automated_data_interval=manual, restriction=_catching_up())
        assert nxt.data_interval.start == manual.end
        assert nxt.data_interval.end - nxt.data_interval.start == timedelta(hours=1)


def _catching_up():
    from airflow.timetables.base import TimeRestriction

    return TimeRestriction(earliest=None, latest=None, catchup=True)
