"""Review findings: scenarios the sync gets wrong today, each a strict xfail until it is fixed."""

from __future__ import annotations

from collections import Counter

import pytest

from dingtalk_kingdee import pipeline, staging
from dingtalk_kingdee.errors import DingTalkError, DingTalkUnavailable
from tests.e2e.test_sync import payable_now

pytestmark = pytest.mark.e2e


@pytest.mark.xfail(strict=True, raises=DingTalkError, reason=(
    "extract re-reads every stored unfinished claim; one that DingTalk no longer returns (deleted, "
    "or the app lost access) raises a permanent DingTalkError on every run, so no claim is paid again"))
def test_one_vanished_running_claim_does_not_stop_every_other_claim_from_being_paid(world):
    # A claim stored while still running, since deleted in DingTalk (the emulator does not know it).
    staging.upsert_instances(world.engine, world.scheme.id, {
        "PROC-GONE-0001": {"business_id": "GONE-0001", "status": "RUNNING", "result": "",
                           "create_time": "2024-05-01 09:00:00", "form_component_values": []},
    }, set(pipeline.FINAL_STATUSES), "earlier_run")

    world.run()

    assert set(world.bills_by_business_id()) == set(payable_now(world))


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


@pytest.mark.xfail(strict=True, reason=(
    "write_back treats DingTalkUnavailable from add_comment (the hook's 'may have taken effect') like a "
    "refusal: state 'failed', and every later run posts the comment again (pipeline.py:383-386, "
    "staging.comments_to_send selects 'failed')"))
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
