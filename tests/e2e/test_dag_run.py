"""The DAG itself, run by Airflow (``dag.test()``), with its trigger-form parameters.

Needs Airflow's metadata database migrated, which ``make test`` does (AIRFLOW_HOME=airflow_home/).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from dingtalk_kingdee.staging import BillState

pytestmark = pytest.mark.e2e


@pytest.fixture
def build_dag(monkeypatch):
    home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
    if not (home / ".migrated").exists():
        pytest.skip("Airflow's metadata database is not migrated here: run the suite with `make test`")
    monkeypatch.setenv("DK_TASK_RETRIES", "0")  # a failing task must fail the run now, not after back-off

    def build(scheme):
        from dingtalk_kingdee.dag_factory import build_dag as factory

        return factory(scheme)

    return build


def trigger(world, dag, **conf):
    conf.setdefault("window_start", (world.now - timedelta(days=30)).isoformat())
    conf.setdefault("window_end", world.now.isoformat())
    dag_run = dag.test(logical_date=world.now.replace(minute=0, second=0) + timedelta(hours=world.runs),
                       run_conf=conf)
    world.runs += 1
    return dag_run


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_a_dag_run_loads_the_approved_claims_and_reports(world, build_dag):
    dag = build_dag(world.scheme)
    dag_run = trigger(world, dag)
    assert str(dag_run.state) == "success", task_states(dag_run)
    payable = {c.instance["business_id"] for c in world.seed if c.truth.payable and c.truth.late_approval_at is None}
    assert set(world.bills_by_business_id()) == payable
    world.assert_no_duplicates()

    # Running the DAG again changes nothing in Kingdee.
    saves = world.kingdee.calls["BatchSave"]
    dag_run = trigger(world, dag)
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert world.kingdee.calls["BatchSave"] == saves
    assert set(world.bills_by_business_id()) == payable


def test_dry_run_param_writes_nothing(world, build_dag):
    dag_run = trigger(world, build_dag(world.scheme), dry_run=True)
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert world.bills() == []
    assert world.dingtalk.comments == []
    assert world.staged.bills(BillState.PENDING)


def test_instance_ids_param_syncs_exactly_those(world, build_dag):
    chosen = [c for c in world.seed if c.truth.payable and c.truth.late_approval_at is None][:2]
    dag_run = trigger(world, build_dag(world.scheme),
                      instance_ids=[c.instance["process_instance_id"] for c in chosen])
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert sorted(world.bills_by_business_id()) == sorted(c.instance["business_id"] for c in chosen)


def test_a_lost_answer_fails_load_and_the_cleared_task_settles_it(world, build_dag):
    dag = build_dag(world.scheme)
    world.kingdee.inject("commit_then_drop", service="BatchSave", times=1)
    dag_run = trigger(world, dag)
    states = task_states(dag_run)
    assert states["load"] == "failed", states
    assert states["report"] == "success", states  # the report still tells where things stand
    # The operator clears the run (or Airflow retries): nothing is sent twice.
    dag_run = trigger(world, dag)
    assert str(dag_run.state) == "success", task_states(dag_run)
    world.assert_no_duplicates()
    payable = {c.instance["business_id"] for c in world.seed if c.truth.payable and c.truth.late_approval_at is None}
    assert set(world.bills_by_business_id()) == payable


def test_the_report_alerts_the_group_robot_with_what_needs_a_person_once(world_factory, build_dag, monkeypatch):
    from dk_emulators.dingtalk import DEMO_ROBOT_TOKEN

    from dingtalk_kingdee.reasons import MAPPING_REASONS

    world = world_factory(count=80, seed=11, edge_rate=0.3)
    monkeypatch.setenv("AIRFLOW_CONN_DINGDING_DEFAULT", json.dumps(
        {"conn_type": "dingding", "host": world.dingtalk.base_url, "password": DEMO_ROBOT_TOKEN}))
    dag = build_dag(world.scheme)
    dag_run = trigger(world, dag)
    assert str(dag_run.state) == "success", task_states(dag_run)
    [message] = world.dingtalk.robot_messages
    text = message["markdown"]["text"]
    final = [c for c in world.seed if c.truth.late_approval_at is None]
    gaps = [c for c in final if c.truth.expected_reject in MAPPING_REASONS]
    assert gaps and message["markdown"]["title"] == f"expense_to_paybill: {len(gaps)} 条报销需要处理"
    for claim in gaps:
        assert claim.instance["business_id"] in text
    for claim in (c for c in final if c.truth.expected_reject == "not_approved"):
        assert claim.instance["business_id"] not in text
    dag_run = trigger(world, dag)  # the next hour: nothing new, no alert
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert len(world.dingtalk.robot_messages) == 1


def test_with_events_on_the_plan_reads_the_approval_assets_recent_events_through_its_inlet(world, build_dag,
                                                                                           monkeypatch):
    """The Task SDK's inlet_events read on Airflow itself: asset events in the metadata database, read by
    the plan task of a real run, the recent ones only."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from dingtalk_kingdee import dag_factory
    from dingtalk_kingdee.scheme import EventsSpec

    scheme = world.scheme.model_copy(update={"events": EventsSpec(enabled=True)})
    dag = build_dag(scheme)
    asset = dag_factory.approval_asset(scheme)
    now = world.now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=world.runs)
    recent, old = [c for c in world.seed if c.truth.payable][:2]
    with create_session() as session:
        model = session.query(AssetModel).filter_by(name=asset.name, uri=asset.uri).one_or_none()
        if model is None:
            model = AssetModel(name=asset.name, uri=asset.uri, group="asset")
            session.add(model)
            session.flush()
        session.query(AssetEvent).filter_by(asset_id=model.id).delete()  # a run of this test before
        for claim, age in ((recent, timedelta(minutes=30)), (old, timedelta(hours=5))):
            session.add(AssetEvent(asset_id=model.id, timestamp=now - age, extra={"from_trigger": True, "payload": {
                "instance_id": claim.instance_id, "type": "finish", "process_code": scheme.source.process_code}}))
    seen: list = []
    real = dag_factory.plan_run

    def watched(*args, caught_up_payloads=(), **kwargs):
        seen.append(list(caught_up_payloads))
        return real(*args, caught_up_payloads=caught_up_payloads, **kwargs)

    monkeypatch.setattr(dag_factory, "plan_run", watched)
    dag_run = dag.test(logical_date=now, run_after=now, run_conf={"instance_ids": [recent.instance_id]})
    world.runs += 1
    assert str(dag_run.state) == "success", task_states(dag_run)
    [payloads] = seen
    assert [p["instance_id"] for p in payloads] == [recent.instance_id]  # 5 h old: outside the 2 h span
