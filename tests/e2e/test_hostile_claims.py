"""Hostile claims through the whole pipeline (extract → transform → load → write_back against both
emulators over HTTP), on SQLite and on PostgreSQL: each rejects itself only, every good claim is paid
once."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dingtalk_kingdee.staging import BillState
from tests.conftest import TEST_DATABASE_URL
from tests.e2e.test_sync import payable_now
from tests.fixtures.claims.builder import claim
from tests.fixtures.claims.hostile import ANCHOR_BUSINESS_ID, anchor, hostile_claims

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgresql"])
def staging_url(request, tmp_path):
    """Both staging databases for every test here (PostgreSQL when DK_TEST_DATABASE_URL is set)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'staging.db'}"
        return
    if not TEST_DATABASE_URL:
        pytest.skip("DK_TEST_DATABASE_URL is not set")
    name = f"dk_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield sa.make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _china_time(world, hours_ago: float) -> str:
    return (world.now + timedelta(hours=8 - hours_ago)).strftime("%Y-%m-%d %H:%M:%S")


def _claim(world, instance_id: str, business_id: str, hours_ago: float = 2, **kw) -> dict:
    """A payable claim started in the run's window (the builder's claim, dated now)."""
    built = claim(instance_id, business_id, finish_time=_china_time(world, hours_ago - 1), **kw)
    return {**built, "create_time": _china_time(world, hours_ago)}


def _rejected(world) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in world.staged.summary().rejected_claims:
        out.setdefault(r.instance_id, set()).add(r.reason_code)
    return out


def test_a_business_id_differing_only_by_a_trailing_space_is_the_duplicate_not_a_failed_run(world_factory):
    world = world_factory(count=0)
    world.dingtalk.add_instances([_claim(world, "PROC-TSP-A", "TSP1", hours_ago=5)])
    world.run()
    assert set(world.bills_by_business_id()) == {"TSP1"}

    later = [_claim(world, "PROC-TSP-B", "TSP1 "), _claim(world, "PROC-TSP-C", "tsp1")]
    good = [_claim(world, f"PROC-GOOD-{i}", f"GOOD{i}") for i in range(10)]
    world.dingtalk.add_instances(later + good)
    world.run()
    world.run()   # a second run changes nothing

    assert set(world.bills_by_business_id()) == {"TSP1"} | {f"GOOD{i}" for i in range(10)}
    world.assert_no_duplicates()
    rejected = _rejected(world)
    assert rejected == {"PROC-TSP-B": {"duplicate_business_id"}, "PROC-TSP-C": {"duplicate_business_id"}}


@pytest.mark.parametrize("status", ["completed", "", "WEIRD"])
def test_an_undocumented_status_is_read_three_times_then_rejected_and_reported(world_factory, status):
    world = world_factory(count=0)
    odd = {**_claim(world, "PROC-ODD", "ODD1"), "status": status}
    world.dingtalk.add_instances([odd, _claim(world, "PROC-OK", "OK1")])
    for _ in range(2):
        world.run()
        assert _rejected(world) == {} and world.staged.unfinished_claims() == ["PROC-ODD"]
    summary = world.run()
    assert _rejected(world) == {"PROC-ODD": {"unknown_status"}}
    assert world.staged.unfinished_claims() == []
    assert "unknown_status" in summary["text"] and "ODD1" in summary["text"]
    assert set(world.bills_by_business_id()) == {"OK1"}


def test_an_instance_id_holding_a_nul_is_counted_and_reported_as_needing_a_person(world_factory, caplog):
    """Staging cannot key such a claim, so it is never paid: that must show, not only in a warning."""
    world = world_factory(count=0)
    long_tail = "x" * 100
    world.dingtalk.add_instances([_claim(world, f"PROC-NUL\x00{long_tail}", "NUL1"),
                                  _claim(world, "PROC-FINE", "FINE1")])
    escaped = f"PROC-NUL\\x00{long_tail}"[:60] + "…"

    for _ in range(2):   # read again next run (never stored, never final), reported again
        summary = world.run()
        assert summary["steps"]["extract"]["unstorable"] == [escaped]
        assert summary["needs_a_person"] == {"unstorable_instance_id": 1}
        assert "unstorable_instance_id" in summary["text"] and escaped in summary["text"]
        assert set(world.bills_by_business_id()) == {"FINE1"}
    assert any(escaped in r.getMessage() and "NUL1" in r.getMessage() for r in caplog.records)
    assert "\x00" not in caplog.text


def test_the_hostile_corpus_rejects_each_hostile_claim_alone_and_pays_every_good_one_once(world_factory):
    """The corpus (tests/fixtures/claims/hostile_claims.json) beside 60 generated claims, three runs
    (an undocumented status is read three times before it is rejected)."""
    world = world_factory(count=60, seed=11)
    world.dingtalk.add_instances([anchor(_china_time(world, 30), _china_time(world, 29))])
    world.run()
    assert ANCHOR_BUSINESS_ID in world.bills_by_business_id()

    corpus = hostile_claims(_china_time(world, 20), _china_time(world, 19))
    assert len(corpus) >= 80
    world.dingtalk.add_instances([c.instance for c in corpus])
    for _ in range(3):
        world.run()

    rejected = _rejected(world)
    loaded = {b.instance_id for b in world.staged.bills(BillState.LOADED).values()}
    unfinished = set(world.staged.unfinished_claims())
    outcomes = {}
    for case in corpus:
        instance_id = case.instance["process_instance_id"]
        if instance_id in rejected:
            outcomes[case.case_id] = ",".join(sorted(rejected[instance_id]))
        elif instance_id in loaded:
            outcomes[case.case_id] = "paid"
        elif instance_id in unfinished:
            outcomes[case.case_id] = "waiting"
        else:
            outcomes[case.case_id] = "no outcome"
    # No reason or stored business id carries a megabyte of claim data (reports and alerts quote them).
    long = [(r.instance_id[:20], len(r.business_id or ""), len(r.reason))
            for r in world.staged.summary().rejected_claims if len(r.business_id or "") > 128 or len(r.reason) > 400]
    assert long == []
    wrong = {c.case_id: (c.what, c.expect, outcomes[c.case_id]) for c in corpus if outcomes[c.case_id] != c.expect}
    assert wrong == {}, "\n".join(f"{k}: {v}" for k, v in wrong.items())

    # Every good claim paid exactly once: the generated payable ones, the anchor and the corpus' own.
    world.assert_no_duplicates()
    paid = set(world.bills_by_business_id())
    assert set(payable_now(world)) | {ANCHOR_BUSINESS_ID} <= paid
    assert len(world.bills()) == len(payable_now(world)) + 1 + sum(c.expect == "paid" for c in corpus)
