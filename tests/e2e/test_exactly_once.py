"""Exactly-once payment that does not lean on Kingdee refusing a duplicate FBillNo, and comments at most once.

Every test runs the scheme that leaves FBillNo unmapped (Kingdee numbers the bill), so nothing but
the sync's own bookkeeping stands between a fault and a second payment. Real HTTP to both emulators,
real SQL on the test's staging database (PostgreSQL when DK_TEST_DATABASE_URL is set).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from dingtalk_kingdee import pipeline
from dingtalk_kingdee.staging import BillState, CommentState, repository
from dingtalk_kingdee.staging.tables import bills as bills_table
from tests.e2e.test_sync import payable_now
from tests.e2e.variants import scheme_without_bill_no

# Short enough for a test, long enough that a slow commit always ends inside it.
LEASE_SECONDS = 4
SLOW_COMMIT_MS = 1500


@pytest.fixture
def unnumbered(world_factory, monkeypatch, tmp_path):
    """A world running the scheme without FBillNo, a 0.5 s read timeout and a short sending lease."""
    world = world_factory(count=30)
    world.scheme = scheme_without_bill_no(tmp_path)
    connection = world.kingdee.connection()
    connection["extra"].update(read_timeout=0.5, max_attempts=2, retry_backoff=0.05)
    monkeypatch.setenv("AIRFLOW_CONN_KINGDEE_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("DK_SENDING_LEASE_SECONDS", str(LEASE_SECONDS))
    return world


def stage(world) -> pipeline.Run:
    dingtalk, _ = world.hooks()
    run = world.make_run()
    pipeline.extract(world.scheme, dingtalk, world.engine, run)
    pipeline.transform(world.scheme, world.engine, run)
    return run


def assert_paid_exactly_once(world) -> None:
    """Every payable claim has exactly one bill, for exactly its amount; nothing else was paid."""
    payable = payable_now(world)
    counts = Counter(str(b["FTHIRDBILLNO"]) for b in world.bills())
    assert {k: n for k, n in counts.items() if n > 1} == {}, "paid more than once"
    assert set(counts) == set(payable), "missing or unexpected bills"
    paid = sum((Decimal(str(e["FPAYTOTALAMOUNTFOR"])) for b in world.bills() for e in b["FPAYBILLENTRY"]),
               Decimal(0))
    assert paid == sum((c.truth.expected_total for c in payable.values()), Decimal(0))


def skew_clock(monkeypatch, worker: threading.Thread | None = None) -> None:
    """The clock the sync's own code reads runs 20 minutes behind in ``worker`` (every thread if None):
    a worker host whose clock is off (time-machine is not installed in this environment)."""
    honest = repository.now

    def skewed() -> datetime:
        behind = worker is None or threading.current_thread() is worker
        return honest() - timedelta(minutes=20) if behind else honest()

    monkeypatch.setattr(repository, "now", skewed)


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_a_slow_commit_past_the_read_timeout_and_an_immediate_retry_pay_once(unnumbered):
    world = unnumbered
    run = stage(world)
    _, kingdee = world.hooks()
    world.kingdee.inject({"kind": "slow_commit", "latency_ms": SLOW_COMMIT_MS}, service="BatchSave")
    with pytest.raises(pipeline.LoadIncomplete):
        pipeline.load(world.scheme, kingdee, world.engine, run)
    # The task retry comes at once, while the first BatchSave has not committed yet.
    pipeline.load(world.scheme, kingdee, world.engine, run)
    assert world.staged.bills(BillState.UNKNOWN), "not found yet, within the lease: still unknown"
    wait_for(lambda: len(world.bills()) == len(payable_now(world)))
    time.sleep(LEASE_SECONDS)
    pipeline.load(world.scheme, kingdee, world.engine, run)
    assert_paid_exactly_once(world)
    assert set(world.staged.bills(BillState.LOADED)) == {c.instance["process_instance_id"]
                                                          for c in payable_now(world).values()}


def test_a_worker_20_minutes_behind_cannot_make_another_resend_its_batch(unnumbered, monkeypatch):
    world = unnumbered
    run = stage(world)
    world.kingdee.inject({"kind": "slow_commit", "latency_ms": SLOW_COMMIT_MS}, service="BatchSave")
    slow_connection = world.kingdee.connection()  # the skewed worker waits for its answer
    slow_connection["extra"].update(read_timeout=10)
    errors: list[BaseException] = []

    def skewed_worker() -> None:
        from dingtalk_kingdee.hooks.kingdee import KingdeeHook
        try:
            pipeline.load(world.scheme, _HookOn(slow_connection, KingdeeHook), world.engine, run)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=skewed_worker, name="skewed")
    skew_clock(monkeypatch, worker)
    worker.start()
    wait_for(lambda: len(world.staged.bills(BillState.SENDING)) == len(payable_now(world)))
    # A worker on the right clock runs an overlapping load while the skewed one's batch is in flight.
    _, kingdee = world.hooks()
    pipeline.load(world.scheme, kingdee, world.engine, world.make_run())
    worker.join(30)
    assert errors == []
    assert_paid_exactly_once(world)


class _HookOn:
    """A KingdeeHook on an explicit connection (the other worker's own settings)."""

    def __init__(self, connection: dict, hook_type) -> None:
        from airflow.models.connection import Connection
        self.hook = hook_type("kingdee_default")
        conn = Connection(conn_id="kingdee_default", **{k: v for k, v in connection.items() if k != "extra"},
                          extra=json.dumps(connection["extra"]))
        self.hook.get_connection = lambda _conn_id: conn  # type: ignore[method-assign]

    def __getattr__(self, name):
        return getattr(self.hook, name)


@pytest.mark.parametrize("fault", ["commit_then_message_ok", "commit_then_empty_success"])
def test_an_odd_answer_to_a_committed_batch_is_settled_by_lookup_and_never_resent(unnumbered, fault):
    world = unnumbered
    run = stage(world)
    _, kingdee = world.hooks()
    world.kingdee.inject(fault, service="BatchSave")
    with contextlib.suppress(pipeline.LoadIncomplete):
        pipeline.load(world.scheme, kingdee, world.engine, run)
    assert not world.staged.bills(BillState.FAILED), "an answer that refuses no model is no refusal"
    world.run()
    world.run(replay_rejected=True)
    assert_paid_exactly_once(world)
    assert world.kingdee.calls["BatchSave"] == 1


def test_a_model_that_does_not_carry_the_match_value_is_never_sent(unnumbered):
    """The scheme checks that the match field is mapped; load checks each model before sending it."""
    world = unnumbered
    run = stage(world)
    [bad] = list(world.staged.bills(BillState.PENDING).values())[:1]
    model = {k: v for k, v in bad.model.items() if k != "FTHIRDBILLNO"}
    with world.engine.begin() as conn:
        conn.execute(bills_table.update().where(bills_table.c.instance_id == bad.instance_id)
                     .values(model=json.dumps(model, ensure_ascii=False)))
    _, kingdee = world.hooks()
    pipeline.load(world.scheme, kingdee, world.engine, run)
    failed = world.staged.bills(BillState.FAILED)
    assert list(failed) == [bad.instance_id]
    reason = failed[bad.instance_id].last_error
    assert "FTHIRDBILLNO" in reason and bad.business_id in reason
    assert bad.business_id not in {str(b.get("FTHIRDBILLNO")) for b in world.bills()}
    assert len(world.bills()) == len(payable_now(world)) - 1


def test_one_bad_bill_number_does_not_stop_the_others_documents(world_factory, staging_url):
    if not staging_url.startswith("sqlite"):
        pytest.skip("PostgreSQL text cannot hold NUL: such a number never reaches dk_bills there")
    world = world_factory(count=30)
    run = stage(world)
    [bad] = list(world.staged.bills(BillState.PENDING).values())[:1]
    model = dict(bad.model, FBillNo=bad.business_id + "\x00X")
    with world.engine.begin() as conn:
        conn.execute(bills_table.update().where(bills_table.c.instance_id == bad.instance_id)
                     .values(model=json.dumps(model, ensure_ascii=False)))
    _, kingdee = world.hooks()
    pipeline.load(world.scheme, kingdee, world.engine, run)
    staged = world.staged.bills()
    assert staged[bad.instance_id].state == BillState.LOADED
    assert bad.instance_id in (staged[bad.instance_id].last_error or "") or "NUL" in (
        staged[bad.instance_id].last_error or "")
    others = [b for i, b in staged.items() if i != bad.instance_id and b.state == BillState.LOADED]
    assert others and {b.doc_status for b in others} == {"C"}
    # Later runs go on with the others and keep naming the bad one, never failing as a whole.
    pipeline.load(world.scheme, kingdee, world.engine, world.make_run())


def test_overlapping_write_backs_comment_each_claim_once(world):
    world.run()
    comments_before = len(world.dingtalk.comments)
    assert comments_before == len(payable_now(world))
    with world.engine.begin() as conn:  # as if no comment had been posted yet
        conn.exec_driver_sql("UPDATE dk_writeback SET comment_state = 'pending'")
    world.dingtalk.comments.clear()
    world.dingtalk.latency_ms = 30  # both write_backs are in flight together
    errors: list[BaseException] = []

    def write_back() -> None:
        dingtalk, _ = world.hooks()
        try:
            pipeline.write_back(world.scheme, dingtalk, world.engine, world.make_run())
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=write_back) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    posted = Counter(c["process_instance_id"] for c in world.dingtalk.comments)
    assert {k: n for k, n in posted.items() if n > 1} == {}
    assert len(posted) == comments_before
    assert world.staged.summary().comments_by_state == {CommentState.DONE: comments_before}


def test_an_interrupted_comment_is_reported_unknown_and_never_resent(world, monkeypatch):
    monkeypatch.setenv("DK_SENDING_LEASE_SECONDS", "0")
    dingtalk, kingdee = world.hooks()
    run = world.make_run()
    pipeline.extract(world.scheme, dingtalk, world.engine, run)
    pipeline.transform(world.scheme, world.engine, run)
    pipeline.load(world.scheme, kingdee, world.engine, run)
    staged = world.staged
    staged.record_ledger(comments_enabled=True)
    claimed = staged.claim_comments(limit=3)  # a write_back claimed these, then was killed
    assert len(claimed) == 3
    pipeline.write_back(world.scheme, dingtalk, world.engine, run)
    posted = {c["process_instance_id"] for c in world.dingtalk.comments}
    assert not posted & {c.instance_id for c in claimed}
    assert staged.summary().comments_by_state[CommentState.UNKNOWN] == 3
    assert "unknown, not resent" in pipeline.report(world.scheme, world.engine, run)["text"]


def test_the_sending_lease_is_measured_on_the_database_clock(unnumbered, monkeypatch):
    """A bill claimed by a worker 20 minutes behind is young: the lease reads the database's clock."""
    world = unnumbered
    stage(world)
    skew_clock(monkeypatch)
    assert len(world.staged.claim_for_sending(5)) == 5
    monkeypatch.undo()
    assert world.staged.bills_in_doubt(timedelta(minutes=15)) == []
    assert len(world.staged.bills(BillState.SENDING)) == 5
