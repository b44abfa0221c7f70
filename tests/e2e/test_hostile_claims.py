"""Hostile claims through the whole pipeline (extract → transform → load → write_back against both
emulators over HTTP), on SQLite and on PostgreSQL: each rejects itself only, every good claim is paid
once."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.claims.builder import claim

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
