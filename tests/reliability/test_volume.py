"""Volume: 10,000 claims of six (and more, nested) rows each in one run, extract → transform → load
against both emulators over real HTTP, staging on PostgreSQL in CI. Every payable claim must be paid
exactly once and to the cent; the figures (claims, rows, seconds per step) go to the test log.

Slow (minutes): marked ``reliability``, run by ``make test-reliability`` (DK_RELIABILITY=1), not by
``make test``.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa

from dingtalk_kingdee import pipeline
from dingtalk_kingdee.hooks.kingdee import KingdeeHook
from dingtalk_kingdee.staging import BillState
from tests.e2e.expected import bill_total

pytestmark = pytest.mark.reliability

CLAIMS = 10_000
ROWS = 6


def test_ten_thousand_claims_of_six_rows_are_paid_exactly_once_in_one_run(world_factory, capsys):
    started = time.perf_counter()
    world = world_factory(count=CLAIMS, seed=5, rows=(ROWS, ROWS))
    seeded = time.perf_counter() - started
    run = world.make_run()
    dingtalk, _ = world.hooks()
    engine = world.engine
    times: dict[str, float] = {}
    counts: dict[str, dict] = {}
    for step, call in (
        ("extract", lambda: pipeline.extract(world.scheme, dingtalk, engine, run)),
        ("transform", lambda: pipeline.transform(world.scheme, engine, run)),
        ("load", lambda: pipeline.load(world.scheme, KingdeeHook("kingdee_default"), engine, run)),
    ):
        began = time.perf_counter()
        counts[step] = call()
        times[step] = time.perf_counter() - began

    with engine.connect() as conn:
        staged_rows = conn.execute(sa.text("SELECT count(*) FROM dk_rows")).scalar()
    expected = {c.instance["business_id"]: c for c in world.seed
                if c.truth.payable and c.truth.late_approval_at is None}
    bills = world.bills()
    paid = Counter(str(b["FTHIRDBILLNO"]) for b in bills)
    with capsys.disabled():
        print(f"\nvolume ({engine.dialect.name}): {CLAIMS} claims, {staged_rows} staged rows, "
              f"{len(expected)} payable, {len(bills)} bills in Kingdee; seeding {seeded:.1f} s")
        for step, seconds in times.items():
            print(f"  {step:<10} {seconds:7.1f} s  {counts[step]}")

    assert staged_rows >= CLAIMS * ROWS * 0.7  # the transform stores the rows of every final claim
    assert {k: n for k, n in paid.items() if n > 1} == {}
    assert set(paid) == set(expected)
    kingdee_totals = {str(b["FTHIRDBILLNO"]): bill_total(b) for b in bills}
    assert {k: v for k, v in kingdee_totals.items() if v != expected[k].truth.expected_total} == {}
    summary = world.staged.summary()
    expected_money = sum((c.truth.expected_total for c in expected.values()), Decimal("0"))
    assert summary.money_by_state == {BillState.LOADED: expected_money}
    assert sum(kingdee_totals.values(), Decimal("0")) == expected_money
