"""The production topology, run: api-server, scheduler, dag-processor, triggerer and two Celery
workers as separate processes (scripts/topology.py), Airflow's metadata and staging on PostgreSQL, the
broker on Redis, configured from docker/airflow.env like docker-compose.yaml, both emulators on loopback.

Driven only through Airflow's REST API, as an operator would: switch the DAG on, trigger a run, start
a backfill, clear a task of a finished run. Kingdee must then hold exactly one bill per payable claim.
The scheme has its Stream events on: claims approved in the DingTalk emulator (its admin API) become
bills through asset-triggered runs on the Celery workers.

Takes a few minutes and needs PostgreSQL and Redis: run it with `make test-topology` (which sets
DK_TOPOLOGY=1; `.ci/run` does). PostgreSQL and Redis addresses: DK_TOPOLOGY_POSTGRES_URL and
DK_TOPOLOGY_REDIS_URL (default 127.0.0.1:5432, user postgres, and 127.0.0.1:6379).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from scripts.approvals import APPROVE, DingTalkAdmin, running_claims, wait_for
from scripts.topology import Topology, TopologyConfig
from tests.fixtures.event_runs import assert_event_runs_made_every_bill, decide_and_wait

pytestmark = pytest.mark.skipif(os.environ.get("DK_TOPOLOGY") != "1",
                                reason="the distributed topology runs with `make test-topology`")

RUN_TIMEOUT_S = 600
REDIS_DB = 13  # the topology test's own Redis database; `scripts/topology.py` defaults to 5


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    name = f"t{uuid.uuid4().hex[:8]}"
    config = TopologyConfig(
        name=name, state_dir=tmp_path_factory.mktemp("topology"), redis_db=REDIS_DB, events=True,
        postgres_url=os.environ.get("DK_TOPOLOGY_POSTGRES_URL", TopologyConfig.postgres_url),
        redis_url=os.environ.get("DK_TOPOLOGY_REDIS_URL", TopologyConfig.redis_url))
    topology = Topology(config)
    try:
        with topology:
            yield topology
    except BaseException:
        for process in ("init", *topology.processes, "scheduler", "worker-1", "worker-2"):
            print(f"----- {process} -----\n{topology.log_tail(process)}")
        raise
    finally:
        topology.drop_databases()


def payable(topology) -> set[str]:
    """Business ids the seed says must become bills (claims approved now, not later)."""
    return {c.instance["business_id"] for c in topology.seed if c.truth.payable and c.truth.late_approval_at is None}


def wait_all_finished(api, dag_id: str, expected_runs: int) -> list[dict]:
    import time

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = api.dag_runs(dag_id)
        if len(runs) >= expected_runs and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(3)
    return api.dag_runs(dag_id)


def test_the_distributed_topology_bills_each_payable_claim_once(topology):
    api = topology.api()
    dag_id = topology.dag_id
    assert api.call("GET", f"/dags/{dag_id}")["is_paused"] is True  # docker/airflow.env: paused at creation

    api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    # A manual run's data interval is the last whole hour (the hourly timetable's inference), and its
    # window would end there: the claims the seed started in the current hour would wait for the next
    # hour's run. The operator asks for "up to now" through the trigger form's window_end instead.
    now = datetime.now(UTC).isoformat()
    manual = api.call("POST", f"/dags/{dag_id}/dagRuns",
                      json={"dag_run_id": "manual_topology", "logical_date": now, "conf": {"window_end": now}})
    run = api.wait_dag_run(dag_id, manual["dag_run_id"], RUN_TIMEOUT_S)
    assert run["state"] == "success", topology.log_tail("scheduler")
    expected = payable(topology)
    assert expected, "the seed should have payable claims"
    assert {b["FTHIRDBILLNO"] for b in topology.kingdee.bills()} == expected

    # A backfill over three hours of the schedule, while the scheduler keeps its own runs going.
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    backfill = api.call("POST", "/backfills", json={
        "dag_id": dag_id, "from_date": (hour - timedelta(hours=6)).isoformat(),
        "to_date": (hour - timedelta(hours=4)).isoformat(), "reprocess_behavior": "none", "max_active_runs": 2})
    backfill_runs = {r["dag_run_id"] for r in api.dag_runs(dag_id) if r["run_type"] == "backfill"}
    assert len(backfill_runs) == 3, backfill
    runs = wait_all_finished(api, dag_id, expected_runs=len(backfill_runs) + 1)
    assert {r["dag_run_id"]: r["state"] for r in runs} == {r["dag_run_id"]: "success" for r in runs}

    # Clear `load` of the finished manual run: it runs again on a worker and sends nothing twice.
    saves = topology.kingdee.calls["BatchSave"]
    cleared = api.call("POST", f"/dags/{dag_id}/clearTaskInstances", json={
        "dry_run": False, "dag_run_id": manual["dag_run_id"], "task_ids": ["load"], "only_failed": False,
        "reset_dag_runs": True})
    assert [ti["task_id"] for ti in cleared["task_instances"]] == ["load"]
    run = api.wait_dag_run(dag_id, manual["dag_run_id"], RUN_TIMEOUT_S, states=("success", "failed"))
    assert run["state"] == "success"
    load = api.call("GET", f"/dags/{dag_id}/dagRuns/{manual['dag_run_id']}/taskInstances/load")
    assert load["try_number"] == 2 and load["state"] == "success"

    runs = wait_all_finished(api, dag_id, expected_runs=len(backfill_runs) + 1)
    assert all(r["state"] == "success" for r in runs), runs
    counts = Counter(str(b["FTHIRDBILLNO"]) for b in topology.kingdee.bills())
    assert set(counts) == expected
    assert {k: n for k, n in counts.items() if n > 1} == {}, "a claim was paid twice"
    assert topology.kingdee.calls["BatchSave"] == saves

    # The tasks ran on the Celery workers, through the topology's own queue.
    queues = {ti["queue"] for r in runs for ti in api.call(
        "GET", f"/dags/{dag_id}/dagRuns/{r['dag_run_id']}/taskInstances")["task_instances"]}
    assert queues == {f"dk_{topology.config.name}"}
    executed = {name: topology.log_tail(name, 10**7).count("execute_workload") for name in topology.processes
                if name.startswith("worker-")}
    assert sum(executed.values()) >= 5 * len(runs), executed


def test_approvals_become_bills_through_events_on_the_celery_workers(topology):
    """Claims started a day before (no hourly listing brings them) and approved now: each becomes one
    bill made by an asset-triggered run whose tasks ran on the workers."""
    wait_for("the triggerer's Stream connection",
             lambda: DingTalkAdmin(topology.dingtalk.base_url).stream()["open_connections"], RUN_TIMEOUT_S)
    approved = running_claims(6, topology.scheme.source.process_code, seed=1414)
    outcome = decide_and_wait(topology, [(c, APPROVE) for c in approved], pace_s=1)
    assert_event_runs_made_every_bill(outcome, {c.business_id for c in approved})
    api = topology.api()
    queues = {ti["queue"] for r in outcome.runs for ti in api.call(
        "GET", f"/dags/{topology.dag_id}/dagRuns/{r['dag_run_id']}/taskInstances")["task_instances"]}
    assert queues == {f"dk_{topology.config.name}"}
