"""Retention (``DK_STAGING_RETENTION_DAYS``): claims settled long ago lose their detail rows and raw
answers, never what exactly-once rests on; a claim listed and read again is not paid again. On
SQLite and on the configured staging database (PostgreSQL in CI)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dingtalk_kingdee import pipeline
from dingtalk_kingdee.staging import BillState, CommentState
from dingtalk_kingdee.staging.tables import bills, instances, rows, writeback


@pytest.fixture(params=["sqlite", "configured"])
def staging_url(request, tmp_path, staging_url):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'retention.db'}"
    return staging_url


def table_counts(engine, table, column="instance_id") -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(table.c[column], sa.func.count()).group_by(table.c[column])).all())


def payload_kept(engine) -> dict[str, bool]:
    with engine.connect() as conn:
        return {r.instance_id: r.payload is not None
                for r in conn.execute(sa.select(instances.c.instance_id, instances.c.payload))}


def test_retention_prunes_only_long_settled_claims_and_never_pays_twice(world_factory, monkeypatch):
    world = world_factory(count=40)
    world.run()
    engine = world.engine
    loaded = sorted(world.staged.bills(BillState.LOADED))
    assert len(loaded) >= 10
    old, recent = loaded[: len(loaded) // 2], loaded[len(loaded) // 2:]
    unsettled = old[0]  # loaded long ago, but its comment is still to post
    long_ago = datetime.now(UTC) - timedelta(days=100)
    with engine.begin() as conn:
        conn.execute(bills.update().where(bills.c.instance_id.in_(old)).values(loaded_at=long_ago))
        conn.execute(writeback.update().where(writeback.c.instance_id == unsettled)
                     .values(comment_state=CommentState.PENDING))
    rows_before = table_counts(engine, rows)
    assert any(rows_before.get(i) for i in old), "the seed's claims have detail rows"
    ledger_before = (table_counts(engine, bills), table_counts(engine, writeback))
    kingdee_before = len(world.bills())

    pruned = world.staged.prune_settled(datetime.now(UTC) - timedelta(days=30))

    settled = set(old) - {unsettled}
    assert pruned.claims == len(settled) and pruned.payloads == len(settled)
    assert pruned.rows == sum(rows_before.get(i, 0) for i in settled)
    rows_after, kept = table_counts(engine, rows), payload_kept(engine)
    assert not any(rows_after.get(i) for i in settled) and not any(kept[i] for i in settled)
    for claim in [unsettled, *recent]:
        assert rows_after.get(claim, 0) == rows_before.get(claim, 0) and kept[claim]
    unbilled = set(kept) - set(loaded)   # rejected, running, refused: kept whole
    assert unbilled and all(kept[i] for i in unbilled)
    assert (table_counts(engine, bills), table_counts(engine, writeback)) == ledger_before
    assert world.staged.prune_settled(datetime.now(UTC) - timedelta(days=30)).claims == 0  # nothing left to do

    # The same claims listed and read again, the pruned ones among them, retention on in the report.
    world.dingtalk.clear_faults()
    comments_before = len(world.dingtalk.comments)
    monkeypatch.setenv("DK_STAGING_RETENTION_DAYS", "30")
    again = world.run(instance_ids=tuple(sorted(settled)))
    world.assert_no_duplicates()
    assert len(world.bills()) == kingdee_before
    assert len(world.dingtalk.comments) == comments_before  # each claim was told once, in the first run
    assert again["steps"]["extract"]["already_final"] == len(settled)  # known and final: not read again
    assert again["retention"]["days"] == 30
    assert (table_counts(engine, bills), table_counts(engine, writeback)) == ledger_before

    # Read again all the same (an answer DingTalk changed): the answer is back, the bill stays loaded, once.
    claim = sorted(settled)[0]
    world.staged.store_answers({claim: world.dingtalk.get_instance(claim)}, "reread")
    _, kingdee = world.hooks()
    run = world.make_run(instance_ids=(claim,))
    assert pipeline.transform(world.scheme, engine, run)["kept_sent"] == 1
    assert pipeline.load(world.scheme, kingdee, engine, run)["sent"] == 0
    assert payload_kept(engine)[claim] and len(world.bills()) == kingdee_before
