"""A status DingTalk does not document is read a bounded number of times, then final (and rejected)."""

from __future__ import annotations

import pytest

from dingtalk_kingdee.staging import SchemeStaging
from dingtalk_kingdee.staging.states import UNKNOWN_STATUS_READS


def _answer(status: str | None) -> dict:
    answer = {"process_instance_id": "i1", "business_id": "B1", "result": "", "title": "t"}
    if status is not None:
        answer["status"] = status
    return answer


@pytest.mark.parametrize("status", ["completed", "", "WEIRD", None])
def test_an_unknown_status_is_final_after_a_bounded_number_of_reads(engine, status: str | None) -> None:
    staged = SchemeStaging(engine, "s1")
    assert UNKNOWN_STATUS_READS == 3
    for read in range(1, UNKNOWN_STATUS_READS):
        staged.store_answers({"i1": _answer(status)}, f"r{read}")
        assert staged.unfinished_claims() == ["i1"] and staged.final_among(["i1"]) == set()
        assert staged.claims_to_transform(10) == []
    staged.store_answers({"i1": _answer(status)}, "r3")
    assert staged.unfinished_claims() == [] and staged.final_among(["i1"]) == {"i1"}
    assert [c.instance_id for c in staged.claims_to_transform(10)] == ["i1"]


def test_a_known_status_in_between_starts_the_count_again(engine) -> None:
    staged = SchemeStaging(engine, "s1")
    staged.store_answers({"i1": _answer("WEIRD")}, "r1")
    staged.store_answers({"i1": _answer("WEIRD")}, "r2")
    staged.store_answers({"i1": _answer("RUNNING")}, "r3")
    staged.store_answers({"i1": _answer("WEIRD")}, "r4")
    staged.store_answers({"i1": _answer("WEIRD")}, "r5")
    assert staged.unfinished_claims() == ["i1"]
    staged.store_answers({"i1": _answer("WEIRD")}, "r6")
    assert staged.unfinished_claims() == []


def test_known_statuses_are_unchanged(engine) -> None:
    staged = SchemeStaging(engine, "s1")
    for _ in range(5):
        staged.store_answers({"i1": _answer("RUNNING"), "i2": _answer("COMPLETED")}, "r")
    assert staged.unfinished_claims() == ["i1"] and staged.final_among(["i1", "i2"]) == {"i2"}
