"""Staging tables between the tasks, and the few queries the tasks need (SQLAlchemy Core).

Works on PostgreSQL and SQLite. Money is stored as integer cents: exact on both databases (SQLite
would turn a NUMERIC into a float). Every state change that matters for exactly-once delivery is
committed before the call it guards.

Bill states::

    pending ──claim──▶ sending ──▶ loaded
       ▲                  │  └────▶ failed   (Kingdee refused the model; kept until the model changes
       │                  ▼                   or rejected claims are replayed)
       └──(not found)── unknown  (no answer: reconciled by querying Kingdee before anything is resent)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dingtalk_kingdee.money import from_cents, to_cents

SCHEMA_VERSION = 1

metadata = sa.MetaData()

schema_version = sa.Table(
    "dk_schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

# One row per claim (approval instance) ever listed: the raw detail answer and where it stands.
instances = sa.Table(
    "dk_instances", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("business_id", sa.String(64), index=True),
    sa.Column("status", sa.String(16)),
    sa.Column("result", sa.String(16)),
    sa.Column("is_final", sa.Boolean, nullable=False, default=False),
    sa.Column("payload", sa.Text),
    # Bumped whenever the answer changes; transform works on claims whose version it has not seen.
    sa.Column("payload_version", sa.Integer, nullable=False, default=0),
    sa.Column("transformed_version", sa.Integer, nullable=False, default=0),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_fetched_at", sa.DateTime(timezone=True)),
    sa.Column("last_seen_run", sa.String(250)),
)

# Flattened detail-table rows (any depth), replaced whenever the claim is transformed again.
rows = sa.Table(
    "dk_rows", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("table_path", sa.String(255), primary_key=True),
    sa.Column("row_key", sa.String(255), primary_key=True),
    sa.Column("parent_row_key", sa.String(255)),
    sa.Column("row_index", sa.Integer),
    sa.Column("cells", sa.Text, nullable=False),
)

bills = sa.Table(
    "dk_bills", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("business_id", sa.String(64), nullable=False),
    # The value of the scheme's match field (e.g. FTHIRDBILLNO) that finds the bill again in Kingdee.
    sa.Column("match_value", sa.String(128), nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("payee", sa.String(255)),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("claim_token", sa.String(64)),
    sa.Column("kingdee_id", sa.String(64)),
    sa.Column("bill_number", sa.String(128)),
    sa.Column("doc_status", sa.String(8)),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("loaded_at", sa.DateTime(timezone=True)),
    sa.Column("last_run", sa.String(250)),
    # Two claims can never both become bills under the same match value (business_id).
    sa.UniqueConstraint("scheme_id", "match_value", name="uq_dk_bills_match"),
)
sa.Index("ix_dk_bills_state", bills.c.scheme_id, bills.c.state)

rejects = sa.Table(
    "dk_rejects", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scheme_id", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("business_id", sa.String(64)),
    sa.Column("field", sa.String(255)),
    sa.Column("reason_code", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(250)),
)
sa.Index("ix_dk_rejects_claim", rejects.c.scheme_id, rejects.c.instance_id)

# The callBackStrategy ledger: which approval became which bill, and whether DingTalk was told.
writeback = sa.Table(
    "dk_writeback", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("business_id", sa.String(64), nullable=False),
    sa.Column("kingdee_id", sa.String(64)),
    sa.Column("bill_number", sa.String(128)),
    sa.Column("payee", sa.String(255)),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("loaded_at", sa.DateTime(timezone=True)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    # off | pending | done | failed (DingTalk refused it) | unknown (no answer: it may have been posted)
    sa.Column("comment_state", sa.String(16), nullable=False),
    sa.Column("comment_error", sa.Text),
    sa.Column("commented_at", sa.DateTime(timezone=True)),
)

FINAL_BILL_STATES = ("loaded",)
SENDABLE_STATES = ("pending",)


def now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Engine and schema


def create_engine(url: str) -> Engine:
    """A new engine for the staging database; SQLite files get their folder, WAL and immediate writes."""
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        if sa_url.database and sa_url.database != ":memory:":
            Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            _use_wal(cursor)
            cursor.close()
            # The driver's own deferred BEGIN lets a reader that later writes fail at once with
            # "database is locked" when another writer got in first; SQLAlchemy begins instead.
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn) -> None:
            # Take the write lock up front: concurrent runs queue on busy_timeout instead of failing.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _use_wal(cursor, wait_s: float = 30.0) -> None:
    """Put a SQLite file in WAL mode (it stays so). Several first connections to a new file may
    race to switch it, and SQLite answers "locked" at once rather than waiting: look again."""
    deadline = time.monotonic() + wait_s
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per URL per process."""
    return create_engine(url)


def ensure_schema(engine: Engine) -> None:
    """Create or upgrade the staging tables; safe when several tasks start at once (SQLite's immediate
    transactions and PostgreSQL's advisory lock let one creator in at a time)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Serialise concurrent first runs: CREATE TABLE IF NOT EXISTS races on PostgreSQL.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(424242)")
        metadata.create_all(conn, checkfirst=True)
        current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
        if current is None:
            conn.execute(schema_version.insert().values(version=SCHEMA_VERSION, applied_at=now()))
        elif current > SCHEMA_VERSION:
            raise RuntimeError(
                f"staging schema is version {current}, newer than this code ({SCHEMA_VERSION}): upgrade the code"
            )


def connect(url: str) -> Engine:
    engine = get_engine(url)
    ensure_schema(engine)
    return engine


def _insert_missing(conn: Connection, table: sa.Table, values: list[dict], keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO NOTHING (PostgreSQL and SQLite): rows already there stay."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(table).values(values).on_conflict_do_nothing(index_elements=list(keys)))


def _lock_scheme(conn: Connection, scheme_id: str) -> None:
    """Serialise writers of one scheme's claims until the transaction ends.

    Overlapping runs (a backfill beside the hourly run) write the same claims; PostgreSQL would
    otherwise let two of them insert one new claim at once. SQLite already admits one writer at a time.
    """
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.blake2b(f"dk:{scheme_id}".encode(), digest_size=8).digest(), "big", signed=True)
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({key})")


def chunked(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ---------------------------------------------------------------------------------------------
# Instances


def final_instance_ids(engine: Engine, scheme_id: str, instance_ids: Iterable[str]) -> set[str]:
    """Those of ``instance_ids`` already stored in a final state (never fetched again)."""
    found: set[str] = set()
    ids = list(instance_ids)
    with engine.connect() as conn:
        for part in chunked(ids, 500):
            q = sa.select(instances.c.instance_id).where(
                instances.c.scheme_id == scheme_id, instances.c.instance_id.in_(part),
                instances.c.is_final.is_(True),
            )
            found.update(conn.execute(q).scalars())
    return found


def unfinished_instance_ids(engine: Engine, scheme_id: str) -> list[str]:
    """Claims stored while not yet final: re-read every run, even once outside the look-back window."""
    with engine.connect() as conn:
        return list(conn.execute(
            sa.select(instances.c.instance_id).where(instances.c.scheme_id == scheme_id,
                                                     instances.c.is_final.is_(False))
            .order_by(instances.c.instance_id)).scalars())


def mark_seen(engine: Engine, scheme_id: str, instance_ids: Iterable[str], run_id: str) -> None:
    """Record that this run listed these (already final) claims, for the run's report."""
    ids = list(instance_ids)
    with engine.begin() as conn:
        for part in chunked(ids, 500):
            conn.execute(
                instances.update()
                .where(instances.c.scheme_id == scheme_id, instances.c.instance_id.in_(part))
                .values(last_seen_at=now(), last_seen_run=run_id)
            )


def upsert_instances(engine: Engine, scheme_id: str, answers: Mapping[str, dict], final_statuses: set[str],
                     run_id: str) -> int:
    """Store detail answers; bump payload_version where the answer changed. Returns how many changed."""
    if not answers:
        return 0
    changed = 0
    stamp = now()
    with engine.begin() as conn:
        _lock_scheme(conn, scheme_id)
        existing = {
            r.instance_id: (r.payload, r.payload_version)
            for r in conn.execute(
                sa.select(instances.c.instance_id, instances.c.payload, instances.c.payload_version).where(
                    instances.c.scheme_id == scheme_id, instances.c.instance_id.in_(list(answers))
                )
            )
        }
        for instance_id, answer in answers.items():
            payload = json.dumps(answer, ensure_ascii=False, sort_keys=True)
            status = str(answer.get("status") or "")
            values = dict(
                business_id=answer.get("business_id") or None,
                status=status,
                result=str(answer.get("result") or ""),
                is_final=status in final_statuses,
                payload=payload,
                last_seen_at=stamp,
                last_fetched_at=stamp,
                last_seen_run=run_id,
            )
            if instance_id not in existing:
                conn.execute(instances.insert().values(
                    scheme_id=scheme_id, instance_id=instance_id, payload_version=1, transformed_version=0,
                    first_seen_at=stamp, **values,
                ))
                changed += 1
            else:
                old_payload, version = existing[instance_id]
                if old_payload != payload:
                    values["payload_version"] = version + 1
                    changed += 1
                conn.execute(instances.update().where(
                    instances.c.scheme_id == scheme_id, instances.c.instance_id == instance_id
                ).values(**values))
    return changed


def instances_to_transform(engine: Engine, scheme_id: str, limit: int, after: str = "",
                           instance_ids: Sequence[str] | None = None, include_rejected: bool = False,
                           ) -> list[tuple[str, dict, int]]:
    """Final claims whose latest answer has not been transformed yet, in id order after ``after``.

    ``include_rejected`` also returns claims that ended as rejects or as bills Kingdee refused
    (replay after a value-map fix).
    """
    cond = [instances.c.scheme_id == scheme_id, instances.c.is_final.is_(True), instances.c.instance_id > after]
    pending = instances.c.transformed_version < instances.c.payload_version
    if include_rejected:
        rejected = sa.exists().where(rejects.c.scheme_id == scheme_id,
                                     rejects.c.instance_id == instances.c.instance_id)
        refused = sa.exists().where(bills.c.scheme_id == scheme_id, bills.c.state == "failed",
                                    bills.c.instance_id == instances.c.instance_id)
        pending = sa.or_(pending, rejected, refused)
    cond.append(pending)
    if instance_ids is not None:
        cond.append(instances.c.instance_id.in_(list(instance_ids)))
    q = (sa.select(instances.c.instance_id, instances.c.payload, instances.c.payload_version)
         .where(*cond).order_by(instances.c.instance_id).limit(limit))
    with engine.connect() as conn:
        return [(r.instance_id, json.loads(r.payload), r.payload_version) for r in conn.execute(q)]


def already_billed(engine: Engine, scheme_id: str, business_ids: Iterable[str],
                   exclude: Iterable[str] = ()) -> dict[str, str]:
    """business_id → instance_id of the scheme's bills for these business_ids, other than the claims in
    ``exclude`` (the transform's duplicate check needs no more than the chunk's own business_ids)."""
    skip = set(exclude)
    wanted = sorted({b for b in business_ids if b})
    found: dict[str, str] = {}
    with engine.connect() as conn:
        for part in chunked(wanted, 500):
            q = sa.select(bills.c.business_id, bills.c.instance_id).where(
                bills.c.scheme_id == scheme_id, bills.c.business_id.in_(part))
            found.update({r.business_id: r.instance_id for r in conn.execute(q) if r.instance_id not in skip})
    return found


@dataclass(frozen=True)
class BillRecord:
    instance_id: str
    business_id: str
    match_value: str
    amount: Decimal
    payee: str | None
    model: dict


@dataclass(frozen=True)
class RejectRecord:
    instance_id: str
    business_id: str | None
    field: str | None
    reason_code: str
    reason: str


@dataclass(frozen=True)
class RowRecord:
    instance_id: str
    table_path: str
    row_key: str
    parent_row_key: str | None
    row_index: int
    cells: dict


def save_transform(engine: Engine, scheme_id: str, versions: Mapping[str, int], new_bills: Sequence[BillRecord],
                   new_rejects: Sequence[RejectRecord], new_rows: Sequence[RowRecord], run_id: str,
                   ) -> dict[str, int]:
    """Store one chunk's outcome in one transaction.

    A claim whose bill was already sent (sending / unknown / loaded) is never touched again: its bill
    stands as sent, and a new outcome for it is ignored. Pending or failed bills are replaced.
    """
    stamp = now()
    claim_ids = list(versions)
    counts = {"bills": 0, "rejects": 0, "kept_sent": 0}
    with engine.begin() as conn:
        _lock_scheme(conn, scheme_id)
        locked = set(conn.execute(
            sa.select(bills.c.instance_id).where(
                bills.c.scheme_id == scheme_id, bills.c.instance_id.in_(claim_ids),
                bills.c.state.in_(("sending", "unknown", "loaded")),
            )
        ).scalars())
        open_ids = [i for i in claim_ids if i not in locked]
        counts["kept_sent"] = len(locked)
        for part in chunked(open_ids, 500):
            conn.execute(rejects.delete().where(rejects.c.scheme_id == scheme_id, rejects.c.instance_id.in_(part)))
            # Only bills not yet sent are replaced; the state filter holds even if a claim slipped in.
            conn.execute(bills.delete().where(bills.c.scheme_id == scheme_id, bills.c.instance_id.in_(part),
                                              bills.c.state.in_(("pending", "failed"))))
        for part in chunked(claim_ids, 500):
            conn.execute(rows.delete().where(rows.c.scheme_id == scheme_id, rows.c.instance_id.in_(part)))
        bill_values = [
            dict(scheme_id=scheme_id, instance_id=b.instance_id, business_id=b.business_id,
                 match_value=b.match_value, amount_cents=to_cents(b.amount), payee=b.payee,
                 model=json.dumps(b.model, ensure_ascii=False), state="pending", attempts=0,
                 created_at=stamp, updated_at=stamp, last_run=run_id)
            for b in new_bills if b.instance_id not in locked
        ]
        if bill_values:
            # A row still there was sent meanwhile: keep it. (A clash on match_value still raises.)
            _insert_missing(conn, bills, bill_values, ("scheme_id", "instance_id"))
        counts["bills"] = len(bill_values)
        reject_values = [
            dict(scheme_id=scheme_id, instance_id=r.instance_id, business_id=r.business_id, field=r.field,
                 reason_code=r.reason_code, reason=r.reason, created_at=stamp, run_id=run_id)
            for r in new_rejects if r.instance_id not in locked
        ]
        if reject_values:
            conn.execute(rejects.insert(), reject_values)
        counts["rejects"] = len({r["instance_id"] for r in reject_values})
        row_values = [
            dict(scheme_id=scheme_id, instance_id=r.instance_id, table_path=r.table_path, row_key=r.row_key,
                 parent_row_key=r.parent_row_key, row_index=r.row_index,
                 cells=json.dumps(r.cells, ensure_ascii=False, default=str))
            for r in new_rows
        ]
        if row_values:
            _insert_missing(conn, rows, row_values, ("scheme_id", "instance_id", "table_path", "row_key"))
        for instance_id, version in versions.items():
            conn.execute(instances.update().where(
                instances.c.scheme_id == scheme_id, instances.c.instance_id == instance_id
            ).values(transformed_version=version))
    return counts


# ---------------------------------------------------------------------------------------------
# Bills


@dataclass(frozen=True)
class ClaimedBill:
    instance_id: str
    business_id: str
    match_value: str
    amount: Decimal
    model: dict


def bills_in_doubt(engine: Engine, scheme_id: str, lease: timedelta,
                   instance_ids: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(instance_id, match_value) of bills whose fate in Kingdee is not known here.

    ``unknown`` bills, and ``sending`` bills whose sender went quiet for longer than ``lease`` (a
    crashed or killed task). Younger ``sending`` bills belong to a load that may still be running.
    """
    cutoff = now() - lease
    cond = [bills.c.scheme_id == scheme_id,
            sa.or_(bills.c.state == "unknown", sa.and_(bills.c.state == "sending", bills.c.sent_at < cutoff))]
    if instance_ids is not None:
        cond.append(bills.c.instance_id.in_(list(instance_ids)))
    with engine.connect() as conn:
        return [(r.instance_id, r.match_value) for r in conn.execute(
            sa.select(bills.c.instance_id, bills.c.match_value).where(*cond).order_by(bills.c.instance_id))]


def claim_for_sending(engine: Engine, scheme_id: str, limit: int,
                      instance_ids: Sequence[str] | None = None) -> list[ClaimedBill]:
    """Atomically move up to ``limit`` pending bills to ``sending`` and return them.

    The conditional UPDATE is what keeps two concurrent loads from sending the same bill: a row
    another load claimed first no longer matches ``state = 'pending'``.
    """
    token = uuid.uuid4().hex
    stamp = now()
    with engine.begin() as conn:
        _lock_scheme(conn, scheme_id)  # never between a transform's look at sent bills and its rewrite
        cond = [bills.c.scheme_id == scheme_id, bills.c.state.in_(SENDABLE_STATES)]
        if instance_ids is not None:
            cond.append(bills.c.instance_id.in_(list(instance_ids)))
        candidates = list(conn.execute(
            sa.select(bills.c.instance_id).where(*cond).order_by(bills.c.instance_id).limit(limit)
        ).scalars())
        if candidates:
            conn.execute(
                bills.update()
                .where(bills.c.scheme_id == scheme_id, bills.c.instance_id.in_(candidates),
                       bills.c.state.in_(SENDABLE_STATES))
                .values(state="sending", claim_token=token, sent_at=stamp, updated_at=stamp,
                        attempts=bills.c.attempts + 1)
            )
    with engine.connect() as conn:
        return [
            ClaimedBill(r.instance_id, r.business_id, r.match_value, from_cents(r.amount_cents), json.loads(r.model))
            for r in conn.execute(
                sa.select(bills).where(bills.c.scheme_id == scheme_id, bills.c.claim_token == token,
                                       bills.c.state == "sending").order_by(bills.c.instance_id))
        ]


def set_bill_state(engine: Engine, scheme_id: str, instance_id: str, state: str, run_id: str, *,
                   kingdee_id: str | None = None, bill_number: str | None = None, error: str | None = None,
                   doc_status: str | None = None, expect: Sequence[str] | None = None) -> bool:
    """Move one bill to ``state``; with ``expect``, only from one of those states. True if it moved."""
    values: dict[str, Any] = dict(state=state, updated_at=now(), last_run=run_id, last_error=error)
    if state == "loaded":
        values.update(loaded_at=now(), kingdee_id=kingdee_id, bill_number=bill_number, claim_token=None)
    if state == "pending":
        values["claim_token"] = None
    if doc_status:
        values["doc_status"] = doc_status
    cond = [bills.c.scheme_id == scheme_id, bills.c.instance_id == instance_id]
    if expect:
        cond.append(bills.c.state.in_(list(expect)))
    with engine.begin() as conn:
        return conn.execute(bills.update().where(*cond).values(**values)).rowcount == 1


def set_doc_status(engine: Engine, scheme_id: str, instance_ids: Sequence[str], doc_status: str) -> None:
    with engine.begin() as conn:
        for part in chunked(list(instance_ids), 500):
            conn.execute(bills.update().where(bills.c.scheme_id == scheme_id, bills.c.instance_id.in_(part))
                         .values(doc_status=doc_status, last_error=None, updated_at=now()))


def loaded_bills_needing_status(engine: Engine, scheme_id: str, wanted: str) -> list[tuple[str, str, str]]:
    """(instance_id, bill_number, doc_status) of loaded bills not yet at document status ``wanted``."""
    with engine.connect() as conn:
        return [(r.instance_id, r.bill_number, r.doc_status) for r in conn.execute(
            sa.select(bills.c.instance_id, bills.c.bill_number, bills.c.doc_status).where(
                bills.c.scheme_id == scheme_id, bills.c.state == "loaded",
                sa.or_(bills.c.doc_status.is_(None), bills.c.doc_status != wanted)))]


# ---------------------------------------------------------------------------------------------
# Write-back ledger


def record_ledger(engine: Engine, scheme_id: str, comments_enabled: bool) -> int:
    """Add a ledger line for every loaded bill that has none; returns how many were added."""
    stamp = now()
    with engine.begin() as conn:
        missing = conn.execute(
            sa.select(bills).where(
                bills.c.scheme_id == scheme_id, bills.c.state == "loaded",
                ~sa.exists().where(writeback.c.scheme_id == scheme_id,
                                   writeback.c.instance_id == bills.c.instance_id),
            )
        ).all()
        values = [
            dict(scheme_id=scheme_id, instance_id=b.instance_id, business_id=b.business_id,
                 kingdee_id=b.kingdee_id, bill_number=b.bill_number, payee=b.payee,
                 amount_cents=b.amount_cents, loaded_at=b.loaded_at, recorded_at=stamp,
                 comment_state="pending" if comments_enabled else "off")
            for b in missing
        ]
        _insert_missing(conn, writeback, values, ("scheme_id", "instance_id"))
    return len(values)


def comments_to_send(engine: Engine, scheme_id: str) -> list[dict]:
    """Ledger lines whose comment is still to be posted. A comment that failed or got no answer is not
    posted again by itself: an employee seeing "paid" twice is worse than a missing note."""
    q = (sa.select(writeback, instances.c.payload)
         .join(instances, sa.and_(instances.c.scheme_id == writeback.c.scheme_id,
                                  instances.c.instance_id == writeback.c.instance_id))
         .where(writeback.c.scheme_id == scheme_id, writeback.c.comment_state == "pending")
         .order_by(writeback.c.instance_id))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def set_comment_state(engine: Engine, scheme_id: str, instance_id: str, state: str,
                      error: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(writeback.update().where(
            writeback.c.scheme_id == scheme_id, writeback.c.instance_id == instance_id
        ).values(comment_state=state, comment_error=error, commented_at=now() if state == "done" else None))


# ---------------------------------------------------------------------------------------------
# Reporting


def summary(engine: Engine, scheme_id: str, run_id: str | None = None) -> dict:
    """Where the scheme's claims stand; with ``run_id``, only claims that run listed."""
    with engine.connect() as conn:
        inst_cond = [instances.c.scheme_id == scheme_id]
        if run_id is not None:
            inst_cond.append(instances.c.last_seen_run == run_id)
        seen = sa.select(instances.c.instance_id).where(*inst_cond).subquery()
        status_counts = {
            (r.status, r.result): r.n for r in conn.execute(
                sa.select(instances.c.status, instances.c.result, sa.func.count().label("n"))
                .where(*inst_cond).group_by(instances.c.status, instances.c.result))
        }
        bill_rows = conn.execute(
            sa.select(bills.c.state, sa.func.count().label("n"), sa.func.sum(bills.c.amount_cents).label("cents"))
            .where(bills.c.scheme_id == scheme_id, bills.c.instance_id.in_(sa.select(seen.c.instance_id)))
            .group_by(bills.c.state)
        ).all()
        reject_rows = conn.execute(
            sa.select(rejects.c.reason_code, sa.func.count(sa.distinct(rejects.c.instance_id)).label("n"))
            .where(rejects.c.scheme_id == scheme_id, rejects.c.instance_id.in_(sa.select(seen.c.instance_id)))
            .group_by(rejects.c.reason_code)
        ).all()
        comment_rows = conn.execute(
            sa.select(writeback.c.comment_state, sa.func.count().label("n"))
            .where(writeback.c.scheme_id == scheme_id, writeback.c.instance_id.in_(sa.select(seen.c.instance_id)))
            .group_by(writeback.c.comment_state)
        ).all()
        rejected_claims = conn.execute(
            sa.select(rejects.c.instance_id, rejects.c.business_id, rejects.c.reason_code, rejects.c.reason)
            .where(rejects.c.scheme_id == scheme_id, rejects.c.instance_id.in_(sa.select(seen.c.instance_id)))
            .order_by(rejects.c.business_id, rejects.c.id)
        ).all()
    seen_total = sum(status_counts.values())
    approved = sum(n for (status, result), n in status_counts.items() if status == "COMPLETED" and result == "agree")
    running = sum(n for (status, _), n in status_counts.items() if status in ("RUNNING", "NEW"))
    return {
        "claims_seen": seen_total,
        "claims_by_status": {f"{s}/{r or '-'}": n for (s, r), n in sorted(status_counts.items())},
        "approved": approved,
        "still_running": running,
        "bills_by_state": {r.state: r.n for r in bill_rows},
        "money_by_state": {r.state: str(from_cents(r.cents)) for r in bill_rows},
        "rejected_by_reason": {r.reason_code: r.n for r in reject_rows},
        "comments_by_state": {r.comment_state: r.n for r in comment_rows},
        "rejected_claims": [
            {"instance_id": r.instance_id, "business_id": r.business_id, "reason_code": r.reason_code,
             "reason": r.reason}
            for r in rejected_claims
        ],
    }


def bills_by_instance(engine: Engine, scheme_id: str) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.instance_id: dict(r._mapping) for r in conn.execute(
            sa.select(bills).where(bills.c.scheme_id == scheme_id))}
