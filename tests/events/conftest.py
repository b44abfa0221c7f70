"""One Airflow for every Stream events test: api-server, scheduler, dag-processor and triggerer as
separate processes with the LocalExecutor (scripts/topology.py), metadata and staging on PostgreSQL,
both emulators on loopback, the scheme with ``events: {enabled: true}``.

Runs with `make test-events` (DK_EVENTS=1), not with `make test`. PostgreSQL and Redis addresses:
DK_TOPOLOGY_POSTGRES_URL and DK_TOPOLOGY_REDIS_URL, as for the topology test; the logs stay in
var/test-events/logs (DK_EVENTS_STATE_DIR).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.approvals import DingTalkAdmin, finished_runs, wait_for
from scripts.topology import Topology, TopologyConfig
from tests.fixtures.gates import skip_folder_unless

# Logs (each service's, each task's) kept after the run for a look at what happened.
STATE_DIR = Path(os.environ.get("DK_EVENTS_STATE_DIR", Path(__file__).resolve().parents[2] / "var" / "test-events"))
REDIS_DB = 12  # the events test's own Redis database (the topology test has 13, scripts/topology.py 5)
START_TIMEOUT_S = 300
# The emulator redelivers an event not acked with 200 after this long (DingTalk's own delay is not
# documented); short, so a lost ack shows within the test.
REDELIVERY_S = 5


def pytest_collection_modifyitems(config, items):
    skip_folder_unless(items, "tests/events/", "DK_EVENTS", "the Stream events test runs with `make test-events`")


@pytest.fixture(scope="session")
def events_topology() -> Iterator[Topology]:
    config = TopologyConfig(
        name=f"e{uuid.uuid4().hex[:8]}", executor="LocalExecutor", events=True, claims=0,
        state_dir=STATE_DIR, redis_db=REDIS_DB,
        postgres_url=os.environ.get("DK_TOPOLOGY_POSTGRES_URL", TopologyConfig.postgres_url),
        redis_url=os.environ.get("DK_TOPOLOGY_REDIS_URL", TopologyConfig.redis_url))
    topology = Topology(config)
    try:
        with topology:
            start_event_mode(topology)
            yield topology
    except BaseException:
        for process in ("init", "scheduler", "triggerer", "dag-processor"):
            print(f"----- {process} -----\n{topology.log_tail(process)}")
        raise
    finally:
        topology.drop_databases()


def start_event_mode(topology: Topology) -> None:
    """Switch the DAG on, let the run its hourly schedule starts at once finish (it lists the empty
    look-back window and sets the listing watermark), and wait for the triggerer's Stream connection."""
    api = topology.api()
    DingTalkAdmin(topology.dingtalk.base_url).configure(stream_redelivery_seconds=REDELIVERY_S)
    api.call("PATCH", f"/dags/{topology.dag_id}", json={"is_paused": False})
    first = wait_for("the first hourly run to finish", lambda: finished_runs(api, topology.dag_id, set()),
                     START_TIMEOUT_S, every=2)
    assert [(r["run_type"], r["state"]) for r in first] == [("scheduled", "success")], first
    wait_for("the triggerer's Stream connection", lambda: stream_connections(topology), START_TIMEOUT_S, every=1)


def stream_connections(topology: Topology) -> int:
    """Open Stream connections of the DingTalk app at the emulator."""
    return DingTalkAdmin(topology.dingtalk.base_url).stream()["open_connections"]


@pytest.fixture
def dingtalk(events_topology) -> DingTalkAdmin:
    return DingTalkAdmin(events_topology.dingtalk.base_url)
