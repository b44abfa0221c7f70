"""The fault matrix: the whole sync (extract → transform → load → write_back) under one fault per cell,
for the shipped scheme and for a variant that leaves FBillNo to Kingdee's numbering.

Each cell injects its fault, runs the sync as Airflow would (a failed run is retried), then lets the
sync finish without faults after the sending lease, and checks: no claim paid twice, none missing,
no money difference between the emulator's bills and the payable claims, and no DingTalk comment
posted twice. Real HTTP to both emulators; staging on PostgreSQL when DK_TEST_DATABASE_URL is set.
Process faults run a step in a subprocess (``worker``) and SIGKILL it. docs/reliability.md records
the outcomes ("Load and write-back: fault matrix").
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from dingtalk_kingdee import pipeline
from dingtalk_kingdee.scheme import load_scheme
from dingtalk_kingdee.staging import BillState, CommentState
from dingtalk_kingdee.staging.tables import writeback
from tests.e2e.test_exactly_once import assert_paid_exactly_once, skew_clock, stage, wait_for
from tests.e2e.variants import SHIPPED, scheme_variant

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
CLAIMS = 32
LEASE_S = 3
READ_TIMEOUT_S = 1.0
SLOW_COMMIT_MS = 2000
FINISH_ROUNDS = 8

log = logging.getLogger(__name__)


@pytest.fixture(params=["shipped", "without_FBillNo"])
def scheme_file(request, tmp_path) -> Path:
    if request.param == "shipped":
        return SHIPPED
    return scheme_variant(tmp_path / "variant", ("FBillNo",))


@pytest.fixture
def world(world_factory, monkeypatch, scheme_file):
    world = world_factory(count=CLAIMS, seed=11)
    world.scheme = load_scheme(scheme_file)
    world.extra["scheme_file"] = scheme_file
    kingdee = world.kingdee.connection()
    kingdee["extra"].update(read_timeout=READ_TIMEOUT_S, max_attempts=3, retry_backoff=0.05)
    dingtalk = world.dingtalk.connection()
    dingtalk["extra"].update(read_timeout=READ_TIMEOUT_S)
    monkeypatch.setenv("AIRFLOW_CONN_KINGDEE_DEFAULT", json.dumps(kingdee))
    monkeypatch.setenv("AIRFLOW_CONN_DINGTALK_DEFAULT", json.dumps(dingtalk))
    monkeypatch.setenv("DK_SENDING_LEASE_SECONDS", str(LEASE_S))
    world.dingtalk.hang_seconds = 2 * READ_TIMEOUT_S
    return world


def attempt(world, **kwargs) -> Exception | None:
    """One run, as a task would: its failure is reported, not raised (Airflow retries it)."""
    try:
        world.run(**kwargs)
    except Exception as exc:  # the cell's fault: the next attempt must repair what it left
        log.info("run failed under the fault: %r", exc)
        return exc
    return None


def finish(world) -> None:
    """Faults off; runs (retries) until nothing is left in doubt, waiting out the lease in between."""
    world.kingdee.clear_faults()
    world.dingtalk.clear_faults()
    world.dingtalk.latency_ms = 0
    for _ in range(FINISH_ROUNDS):
        error = attempt(world)
        open_bills = [b for b in world.staged.bills().values()
                      if b.state in (BillState.PENDING, BillState.SENDING, BillState.UNKNOWN)]
        sending = world.staged.summary().comments_by_state.get(CommentState.SENDING, 0)
        if error is None and not open_bills and not sending:
            return
        time.sleep(LEASE_S)
    pytest.fail(f"the sync did not settle: {len(open_bills)} bills open, {sending} comments sending, "
                f"last error {error!r}")


def check(world) -> None:
    assert_paid_exactly_once(world)
    posted = Counter(c["process_instance_id"] for c in world.dingtalk.comments)
    assert {k: n for k, n in posted.items() if n > 1} == {}, "a comment was posted twice"
    states = world.staged.summary().comments_by_state
    assert set(states) <= {CommentState.DONE, CommentState.UNKNOWN, CommentState.FAILED}, states
    print(f"\n  bills {len(world.bills())}, BatchSave calls {world.kingdee.calls['BatchSave']}, "
          f"comments {dict(states)}")


# ------------------------------------------------------------------------------- the cells

def fault_cell(arm: Callable) -> Callable:
    def cell(world) -> None:
        arm(world)
        attempt(world)
    return cell


def step_subprocess(world, step: str, env: dict) -> subprocess.Popen:
    run = world.make_run()
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.worker", step, str(world.extra["scheme_file"]), run.run_id,
         run.window_start.isoformat(), run.window_end.isoformat()],
        cwd=ROOT, env={**os.environ, **env, "STAGING_DATABASE_URL": world.staging_url},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sigkill_in_load(world) -> None:
    stage(world)
    world.kingdee.inject({"kind": "slow_commit", "latency_ms": SLOW_COMMIT_MS}, service="BatchSave")
    patient = world.kingdee.connection()  # the killed worker waits for its answer
    patient["extra"].update(read_timeout=30)
    worker = step_subprocess(world, "load", {"AIRFLOW_CONN_KINGDEE_DEFAULT": json.dumps(patient)})
    wait_for(lambda: bool(world.staged.bills(BillState.SENDING)), 60)
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    attempt(world)  # the next attempt at once: the killed batch is still committing


def sigkill_in_write_back(world) -> None:
    run = stage(world)
    _, kingdee = world.hooks()
    pipeline.load(world.scheme, kingdee, world.engine, run)
    world.dingtalk.latency_ms = 400

    def comments_in(state: CommentState) -> int:
        with world.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(writeback)
                                .where(writeback.c.comment_state == state)).scalar()

    worker = step_subprocess(world, "write_back", {})
    wait_for(lambda: comments_in(CommentState.SENDING) > 0, 60)
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    attempt(world)


def overlapping_runs(world) -> None:
    world.dingtalk.latency_ms = 20
    world.kingdee.inject({"kind": "latency", "latency_ms": 300}, service="BatchSave", times=None)
    threads = [threading.Thread(target=attempt, args=(world,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def staging_restart(world) -> None:
    if world.engine.dialect.name != "postgresql":
        pytest.skip("a staging restart is PostgreSQL's (pg_terminate_backend); SQLite has no server")
    world.kingdee.inject({"kind": "latency", "latency_ms": 200}, times=None)
    runner = threading.Thread(target=attempt, args=(world,))
    runner.start()
    database = world.engine.url.database
    admin = sa.create_engine(world.engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        while runner.is_alive():
            with admin.connect() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database})
            time.sleep(0.3)
    finally:
        admin.dispose()
        runner.join(120)


def clock_skew(world, monkeypatch) -> None:
    """One worker 20 minutes behind runs beside a worker on time, its batch committing slowly."""
    world.kingdee.inject({"kind": "slow_commit", "latency_ms": SLOW_COMMIT_MS}, service="BatchSave")
    skewed = threading.Thread(target=attempt, args=(world,), name="skewed")
    skew_clock(monkeypatch, skewed)
    skewed.start()
    wait_for(lambda: bool(world.staged.bills(BillState.SENDING)), 60)
    attempt(world)
    skewed.join(120)


CELLS: dict[str, Callable] = {
    # DingTalk
    "dingtalk_throttling": fault_cell(lambda w: w.dingtalk.inject("qps", times=6)),
    "dingtalk_5xx": fault_cell(lambda w: w.dingtalk.inject("http_502", rate=0.2)),
    "dingtalk_token_loss": fault_cell(lambda w: (w.dingtalk.inject("expired_token", times=3),
                                                 w.dingtalk.expire_tokens())),
    "dingtalk_hang": fault_cell(lambda w: w.dingtalk.inject("hang", api="get", times=2)),
    "dingtalk_drop": fault_cell(lambda w: (w.dingtalk.inject("drop", api="get", times=3),
                                           w.dingtalk.inject("drop", api="comment_add", times=2))),
    # Kingdee
    "kingdee_commit_then_drop": fault_cell(lambda w: w.kingdee.inject("commit_then_drop", service="BatchSave")),
    "kingdee_session_loss": fault_cell(lambda w: w.kingdee.inject("session_lost", times=None, rate=0.3)),
    "kingdee_5xx": fault_cell(lambda w: (w.kingdee.inject("http_500", service="BatchSave"),
                                         w.kingdee.inject("http_502", service="ExecuteBillQuery", rate=0.3,
                                                          times=None))),
    "kingdee_slow_commit": fault_cell(lambda w: w.kingdee.inject(
        {"kind": "slow_commit", "latency_ms": SLOW_COMMIT_MS}, service="BatchSave")),
    "kingdee_odd_answer_message_ok": fault_cell(
        lambda w: w.kingdee.inject("commit_then_message_ok", service="BatchSave")),
    "kingdee_odd_answer_empty_success": fault_cell(
        lambda w: w.kingdee.inject("commit_then_empty_success", service="BatchSave")),
    # the process
    "sigkill_in_load": sigkill_in_load,
    "sigkill_in_write_back": sigkill_in_write_back,
    "overlapping_runs": overlapping_runs,
    "staging_restart": staging_restart,
    "clock_skew": clock_skew,
}


@pytest.mark.parametrize("cell", list(CELLS))
def test_fault_matrix(world, cell, monkeypatch):
    run_cell = CELLS[cell]
    if cell == "clock_skew":
        run_cell(world, monkeypatch)
    else:
        run_cell(world)
    finish(world)
    world.run(replay_rejected=True)  # nothing a fault left behind may be replayed into a second bill
    check(world)
