"""Scenarios found by reviewing the sync: claims that must not stall, comments that must not repeat."""

from __future__ import annotations

from collections import Counter

import pytest

from dingtalk_kingdee import pipeline
from dingtalk_kingdee.errors import DingTalkUnavailable
from dingtalk_kingdee.staging import BillState
from tests.e2e.test_sync import payable_now

pytestmark = pytest.mark.e2e


def test_one_vanished_running_claim_does_not_stop_every_other_claim_from_being_paid(world):
    # A claim stored while still running, since deleted in DingTalk (the emulator does not know it).
    world.staged.store_answers({
        "PROC-GONE-0001": {"business_id": "GONE-0001", "status": "RUNNING", "result": "",
                           "create_time": "2024-05-01 09:00:00", "form_component_values": []},
    }, "earlier_run")

    summary = world.run()

    assert set(world.bills_by_business_id()) == set(payable_now(world))
    assert "PROC-GONE-0001" in summary["text"]  # the report names the claim that could not be read


class _AnswerLostOnce:
    """The real DingTalk hook, except that the first comment is added and its answer then lost."""

    def __init__(self, hook) -> None:
        self._hook = hook
        self.lost: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self._hook, name)

    def add_comment(self, instance_id: str, user_id: str, text: str) -> None:
        self._hook.add_comment(instance_id, user_id, text)
        if not self.lost:
            self.lost.append(instance_id)
            raise DingTalkUnavailable("DingTalk process/instance/comment/add: read timeout; the call may or "
                                      "may not have taken effect, so it is not repeated blindly")


def test_a_comment_whose_answer_was_lost_is_not_posted_twice(world):
    dingtalk, kingdee = world.hooks()
    flaky = _AnswerLostOnce(dingtalk)
    run = world.make_run()
    pipeline.extract(world.scheme, dingtalk, world.engine, run)
    pipeline.transform(world.scheme, world.engine, run)
    pipeline.load(world.scheme, kingdee, world.engine, run)
    counts = pipeline.write_back(world.scheme, flaky, world.engine, run)
    assert counts["comments_failed"] == 1
    assert len(world.dingtalk.comments) == len(payable_now(world))  # DingTalk holds every comment

    world.run()

    per_instance = Counter(c["process_instance_id"] for c in world.dingtalk.comments)
    assert {k: n for k, n in per_instance.items() if n > 1} == {}


def _pending_bill_ids(world) -> list[str]:
    return list(world.staged.bills(BillState.PENDING))


def test_a_batch_refused_as_a_whole_is_settled_then_sent_one_by_one(world):
    world.run(dry_run=True)
    pending = _pending_bill_ids(world)
    world.kingdee.inject("refuse_whole_call", service="BatchSave", times=1)
    world.run()
    world.assert_no_duplicates()
    assert set(world.bills_by_business_id()) == set(payable_now(world))
    # First batch refused (1 call), its bills sent one by one, the rest in batches of the scheme's size.
    batch = world.scheme.target.batch_size
    first = min(batch, len(pending))
    rest = len(pending) - first
    assert world.kingdee.calls["BatchSave"] == 1 + first + -(-rest // batch)


def test_a_single_bill_refused_as_a_whole_fails_alone_and_blocks_nothing(world):
    world.run(dry_run=True)
    victim = _pending_bill_ids(world)[0]
    world.kingdee.inject("refuse_whole_call", service="BatchSave", times=1)
    one = world.scheme.model_copy(update={"target": world.scheme.target.model_copy(update={"batch_size": 1})})
    world.run(scheme=one)  # returns normally: the refused bill is failed, every other bill is loaded
    bills = world.staged.bills()
    assert bills[victim].state == BillState.FAILED and "MsgCode 8" in bills[victim].last_error
    assert {b.state for i, b in bills.items() if i != victim} == {BillState.LOADED}
    saves = world.kingdee.calls["BatchSave"]
    world.run(scheme=one)
    assert world.kingdee.calls["BatchSave"] == saves  # the failed bill waits for a fix and a replay
