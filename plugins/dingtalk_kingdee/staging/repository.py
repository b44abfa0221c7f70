"""One scheme's staging, as the steps use it: ``SchemeStaging(engine, scheme_id)``.

Every method is one thing a step needs (``final_among``, ``claim_for_sending``, ``mark_loaded``,
...) and owns its SQL; nothing outside this package writes a query. Every state change that matters
for exactly-once delivery is committed before the call it guards. Writers of one scheme's claims are
serialised by a per-scheme advisory lock on PostgreSQL (SQLite admits one writer at a time anyway).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles

from dingtalk_kingdee.money import from_cents, to_cents
from dingtalk_kingdee.reasons import RejectReason
from dingtalk_kingdee.staging.records import (
    AlertRecord,
    BillInDoubt,
    BillRecord,
    ClaimedBill,
    ClaimToTransform,
    CommentToPost,
    LoadedBill,
    ProblemBill,
    Pruned,
    RejectedClaim,
    RejectRecord,
    RowRecord,
    SavedTransform,
    StagedBill,
    Summary,
)
from dingtalk_kingdee.staging.states import (
    FINAL_STATUSES,
    MAY_BE_IN_KINGDEE,
    OPEN_STATUSES,
    REPLACEABLE,
    SENDABLE,
    UNKNOWN_STATUS_READS,
    BillState,
    CommentState,
    DocumentStatus,
    InstanceResult,
    InstanceStatus,
)
from dingtalk_kingdee.staging.tables import alerts, bills, instances, rejects, rows, writeback

log = logging.getLogger(__name__)

# Ids per expanded IN (...) list; longer lists are bound as one array value (``among``).
IN_CHUNK = 500
# Bound values per statement: PostgreSQL takes at most 65,535, SQLite (3.32+) 32,766; a multi-row
# INSERT of a big chunk (2,000 claims x 6 rows x 7 columns) is split to stay far below both.
PARAMS_PER_STATEMENT = 10_000
# What a BIGINT of cents holds; an amount beyond it is refused, never wrapped.
MAX_CENTS = 2**63 - 1
# Sums are taken in two parts (whole units of this many cents, and the rest) so that no partial sum
# can overflow a 64-bit integer (SQLite's SUM raises "integer overflow"); the total is exact in Python.
_SUM_SPLIT = 10**9
# dk_instances.business_id is an indexed copy for lookups; the payload keeps the whole value. A longer
# one would pass PostgreSQL's B-tree entry limit (about 2,700 bytes) and refuse the claim.
MAX_INDEXED_TEXT = 512
# The database errors that mean "this data", not "this connection" or "this lock": SQLSTATE classes
# 22 (data exception), 23 (integrity constraint) and 54 (program limit, e.g. an index entry too big).
_DATA_SQLSTATES = frozenset({"22", "23", "54"})

T = TypeVar("T")
R = TypeVar("R", BillRecord, RejectRecord, RowRecord)


def now() -> datetime:
    return datetime.now(UTC)


def db_now(conn: Connection) -> sa.ColumnElement:
    """The staging database's clock, not the worker's: leases must not depend on a worker's clock."""
    if conn.dialect.name == "sqlite":
        # The format SQLAlchemy stores datetimes in on SQLite (UTC), so stored values compare as text.
        return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now")
    return sa.func.now()


def db_time_ago(conn: Connection, age: timedelta) -> sa.ColumnElement:
    """The database clock minus ``age``."""
    if conn.dialect.name == "sqlite":
        return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now", f"-{age.total_seconds():.3f} seconds")
    return sa.func.now() - sa.literal(age, sa.Interval())


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def storable(value: T) -> T:
    """Text the database can hold: PostgreSQL refuses NUL in text, so a NUL is kept as the JSON escape
    ``\\u0000`` (the payload, a JSON text, holds it escaped the same way)."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\\u0000")  # type: ignore[return-value]
    return value


def business_key(value: object) -> str | None:
    """A business_id as the transform's duplicate check compares it: stripped of surrounding white
    space, upper-cased (``transform.business_ids.duplicate_key`` of its normal form, for every value
    that has one). None when empty or too long to index (such a claim is rejected by the transform).
    Wider than the normal form on purpose: a key shared by more claims only groups them in one
    transform call."""
    if value is None or isinstance(value, dict | list):
        return None
    key = str(value).strip().upper()
    return storable(key) if key and len(key) <= MAX_INDEXED_TEXT else None


def _storable_row(values: dict) -> dict:
    return {k: storable(v) for k, v in values.items()}


def among(column: sa.ColumnElement, ids: Iterable[str]) -> sa.ColumnElement[bool]:
    """``column IN ids``; a long list is bound as one value (a text array on PostgreSQL, a JSON array on
    SQLite), so it may be as long as it likes: an expanded ``IN (...)`` binds one value per id and
    PostgreSQL refuses more than 65,535 in a statement."""
    ids = [storable(i) for i in ids]
    if len(ids) <= IN_CHUNK:
        return column.in_(ids)
    return _AmongMany(column, ids)


class _AmongMany(sa.sql.expression.ColumnElement):
    """``column = ANY(:array)`` on PostgreSQL, ``column IN (SELECT value FROM json_each(:json))`` elsewhere:
    the dialect is known only when the statement compiles."""

    inherit_cache = False
    type = sa.Boolean()

    def __init__(self, column: sa.ColumnElement, ids: list[str]) -> None:
        self.column, self.ids = column, ids


@compiles(_AmongMany)
def _among_json(element: _AmongMany, compiler: Any, **kw: Any) -> str:
    values = sa.func.json_each(sa.literal(json.dumps(element.ids), type_=sa.Text)).table_valued("value")
    return compiler.process(element.column.in_(sa.select(values.c.value)), **kw)


@compiles(_AmongMany, "postgresql")
def _among_array(element: _AmongMany, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column == sa.any_(sa.literal(element.ids, type_=ARRAY(sa.Text))), **kw)


def _insert_rows(conn: Connection, table: sa.Table, values: list[dict],
                 conflict_keys: Sequence[str] | None = None) -> None:
    """INSERT ``values`` (NUL made storable) in statements small enough for every driver's parameter
    limit. With ``conflict_keys``: ON CONFLICT (keys) DO NOTHING, rows already there stay."""
    if not values:
        return
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    per_statement = max(1, PARAMS_PER_STATEMENT // len(values[0]))
    for part in chunked(values, per_statement):
        statement = insert(table).values([_storable_row(v) for v in part])
        if conflict_keys:
            statement = statement.on_conflict_do_nothing(index_elements=list(conflict_keys))
        conn.execute(statement)


def refused_by_data(exc: sa.exc.DBAPIError) -> bool:
    """The database refused the statement's data (a constraint, a value, a size limit), not the
    connection or a lock: the same data fails the same way every time."""
    if exc.connection_invalidated:
        return False
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return True
    return (getattr(exc.orig, "sqlstate", None) or "")[:2] in _DATA_SQLSTATES


def first_line(exc: BaseException) -> str:
    """The database's own message, first line only (the DETAIL lines may quote the data at length)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).splitlines()[0][:200] if str(orig) else ""
    return f"{type(orig).__name__}: {text}"


def _exact_sum(column: sa.ColumnElement, label: str) -> list[sa.ColumnElement]:
    """Two SUMs whose combination (``_combined``) is the exact sum of ``column`` (see ``_SUM_SPLIT``).
    Integer division and remainder truncate toward zero on both databases, so negatives add up too."""
    return [sa.func.sum(column // _SUM_SPLIT).label(f"{label}_hi"),
            sa.func.sum(column % _SUM_SPLIT).label(f"{label}_lo")]


def _combined(row: Any, label: str) -> int:
    return int(getattr(row, f"{label}_hi") or 0) * _SUM_SPLIT + int(getattr(row, f"{label}_lo") or 0)


def _within_range(new_bills: Sequence[BillRecord]) -> tuple[list[BillRecord], list[RejectRecord]]:
    """The bills whose amount staging holds exactly, and a reject for each of the others (never wrapped)."""
    kept: list[BillRecord] = []
    refused: list[RejectRecord] = []
    for b in new_bills:
        try:
            cents = to_cents(b.amount)
        except ValueError:
            refused.append(RejectRecord(b.instance_id, b.business_id, "amount", RejectReason.AMOUNT_PRECISION,
                                        f"claim {b.instance_id}: amount {b.amount} has more than two decimals"))
            continue
        if abs(cents) > MAX_CENTS:
            refused.append(RejectRecord(b.instance_id, b.business_id, "amount", RejectReason.AMOUNT_TOO_LARGE,
                                        f"claim {b.instance_id}: amount {b.amount} is more than staging holds "
                                        f"exactly ({from_cents(MAX_CENTS)})"))
            continue
        kept.append(b)
    return kept, refused


def _by_claim(records: Iterable[R]) -> dict[str, list[R]]:
    grouped: dict[str, list[R]] = {}
    for record in records:
        grouped.setdefault(record.instance_id, []).append(record)
    return grouped


def _staged_bill(row: Any) -> StagedBill:
    return StagedBill(
        instance_id=row.instance_id, business_id=row.business_id, match_value=row.match_value,
        amount=from_cents(row.amount_cents), payee=row.payee, model=json.loads(row.model),
        state=BillState(row.state), attempts=row.attempts, kingdee_id=row.kingdee_id, bill_number=row.bill_number,
        doc_status=row.doc_status, last_error=row.last_error,
        sent_at=row.sent_at, loaded_at=row.loaded_at, last_run=row.last_run,
    )


class SchemeStaging:
    """The staged claims, bills, rejects and write-back ledger of one scheme."""

    def __init__(self, engine: Engine, scheme_id: str) -> None:
        self.engine = engine
        self.scheme_id = scheme_id

    def __repr__(self) -> str:
        return f"SchemeStaging({self.engine.url.render_as_string(hide_password=True)!r}, {self.scheme_id!r})"

    def _lock(self, conn: Connection) -> None:
        """Serialise writers of this scheme's claims until the transaction ends.

        Overlapping runs (a backfill beside the hourly run) write the same claims; PostgreSQL would
        otherwise let two of them insert one new claim at once. SQLite already admits one writer at a time.
        """
        if conn.dialect.name == "postgresql":
            digest = hashlib.blake2b(f"dk:{self.scheme_id}".encode(), digest_size=8).digest()
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int.from_bytes(digest, 'big', signed=True)})")

    # -- claims (approval instances) -------------------------------------------------------------

    def final_among(self, instance_ids: Iterable[str]) -> set[str]:
        """Those of ``instance_ids`` already stored in a final state (never fetched again). An id holding
        a NUL is never stored (``store_answers``), so never final; PostgreSQL refuses it as a value."""
        return self._stored_among(instance_ids, final=True)

    def unfinished_among(self, instance_ids: Iterable[str]) -> set[str]:
        """Those of ``instance_ids`` stored while not yet final."""
        return self._stored_among(instance_ids, final=False)

    def _stored_among(self, instance_ids: Iterable[str], final: bool) -> set[str]:
        found: set[str] = set()
        with self.engine.connect() as conn:
            for part in chunked([i for i in instance_ids if "\x00" not in i], IN_CHUNK):
                found.update(conn.execute(sa.select(instances.c.instance_id).where(
                    instances.c.scheme_id == self.scheme_id, instances.c.instance_id.in_(part),
                    instances.c.is_final.is_(final),
                )).scalars())
        return found

    def unfinished_claims(self) -> list[str]:
        """Claims stored while not yet final: re-read every run, even once outside the look-back window."""
        with self.engine.connect() as conn:
            return list(conn.execute(
                sa.select(instances.c.instance_id)
                .where(instances.c.scheme_id == self.scheme_id, instances.c.is_final.is_(False))
                .order_by(instances.c.instance_id)).scalars())

    def mark_listed(self, instance_ids: Iterable[str], run_id: str) -> None:
        """Record that this run listed these (already final) claims, for the run's report."""
        with self.engine.begin() as conn:
            # Under the scheme's lock like every other write of these rows: two overlapping runs
            # updating the same claims in different orders deadlocked on PostgreSQL.
            self._lock(conn)
            for part in chunked(list(instance_ids), IN_CHUNK):
                conn.execute(instances.update()
                             .where(instances.c.scheme_id == self.scheme_id, instances.c.instance_id.in_(part))
                             .values(last_seen_at=now(), last_seen_run=run_id))

    def store_answers(self, answers: Mapping[str, dict], run_id: str) -> int:
        """Store DingTalk's detail answers; bump ``payload_version`` where the answer changed.

        Returns how many claims are new or changed. The answers are stored in one transaction; if the
        database refuses one claim's data, claim by claim, and a claim that cannot be stored at all
        (an instance id with a NUL, or too long for the key's index) is left out with a warning.
        """
        answers = self._storable_answers(answers)
        if not answers:
            return 0
        try:
            return self._store_answers(answers, run_id)
        except sa.exc.DBAPIError as exc:
            if not refused_by_data(exc):
                raise
            log.warning("staging: %d answers refused together (%s): storing them one by one", len(answers),
                        first_line(exc))
        changed = 0
        for instance_id, answer in answers.items():
            try:
                changed += self._store_answers({instance_id: answer}, run_id)
            except sa.exc.DBAPIError as exc:
                if not refused_by_data(exc):
                    raise
                log.warning("staging: claim %.80r cannot be stored, left out (%s)", instance_id, first_line(exc))
        return changed

    @staticmethod
    def _storable_answers(answers: Mapping[str, dict]) -> dict[str, dict]:
        """The answers whose instance id can be a key (no NUL: it would not be the same id once escaped)."""
        kept = {}
        for instance_id, answer in answers.items():
            if "\x00" in instance_id:
                log.warning("staging: claim %.80r has a NUL in its instance id: left out", instance_id)
                continue
            kept[instance_id] = answer
        return kept

    def _store_answers(self, answers: Mapping[str, dict], run_id: str) -> int:
        changed = 0
        stamp = now()
        with self.engine.begin() as conn:
            self._lock(conn)
            existing = {
                r.instance_id: (r.payload, r.payload_version, r.unknown_status_reads)
                for r in conn.execute(
                    sa.select(instances.c.instance_id, instances.c.payload, instances.c.payload_version,
                              instances.c.unknown_status_reads).where(
                        instances.c.scheme_id == self.scheme_id, among(instances.c.instance_id, answers)))
            }
            for instance_id, answer in answers.items():
                # JSON escapes every control character (NUL as \u0000): the payload text is always storable.
                payload = json.dumps(answer, ensure_ascii=False, sort_keys=True)
                status = str(answer.get("status") or "").strip()   # as the transform reads it
                business_id = answer.get("business_id") or None
                if isinstance(business_id, str) and len(business_id) > MAX_INDEXED_TEXT:
                    business_id = None  # the payload has it; the transform rejects it by its own rules
                known = status in FINAL_STATUSES or status in OPEN_STATUSES
                reads = 0 if known else (existing[instance_id][2] if instance_id in existing else 0) + 1
                values = _storable_row(dict(
                    business_id=business_id, business_key=business_key(answer.get("business_id")),
                    status=status, result=str(answer.get("result") or ""),
                    is_final=status in FINAL_STATUSES or reads >= UNKNOWN_STATUS_READS, payload=payload,
                    last_seen_at=stamp, last_fetched_at=stamp, last_seen_run=run_id, unknown_status_reads=reads,
                ))
                if instance_id not in existing:
                    conn.execute(instances.insert().values(
                        scheme_id=self.scheme_id, instance_id=instance_id, payload_version=1,
                        transformed_version=0, first_seen_at=stamp, **values))
                    changed += 1
                    continue
                old_payload, version, _ = existing[instance_id]
                if old_payload != payload:
                    values["payload_version"] = version + 1
                    changed += 1
                conn.execute(instances.update().where(
                    instances.c.scheme_id == self.scheme_id, instances.c.instance_id == instance_id,
                ).values(**values))
        return changed

    # -- transform -------------------------------------------------------------------------------

    def claims_to_transform(self, limit: int | None, after: str = "", instance_ids: Collection[str] | None = None,
                            include_rejected: bool = False, fingerprint: str | None = None,
                            fingerprinted_codes: Collection[str] = (), business_keys: Collection[str] | None = None,
                            ) -> list[ClaimToTransform]:
        """Final claims whose latest answer has not been transformed yet, in id order after ``after``.

        With ``fingerprint``, also claims rejected for one of ``fingerprinted_codes`` under another
        scheme fingerprint (or none): the value maps or the mapping changed since. ``include_rejected``
        also returns every claim that ended as rejects or as a bill Kingdee refused (replay).
        ``business_keys`` keeps only claims whose business id has one of these keys (``business_key``).
        """
        sid = self.scheme_id
        due = instances.c.transformed_version < instances.c.payload_version
        if fingerprint is not None and fingerprinted_codes:
            stale = sa.exists().where(
                rejects.c.scheme_id == sid, rejects.c.instance_id == instances.c.instance_id,
                rejects.c.reason_code.in_(list(fingerprinted_codes)),
                sa.or_(rejects.c.scheme_fingerprint.is_(None), rejects.c.scheme_fingerprint != fingerprint))
            due = sa.or_(due, stale)
        if include_rejected:
            rejected = sa.exists().where(rejects.c.scheme_id == sid, rejects.c.instance_id == instances.c.instance_id)
            refused = sa.exists().where(bills.c.scheme_id == sid, bills.c.state == BillState.FAILED,
                                        bills.c.instance_id == instances.c.instance_id)
            due = sa.or_(due, rejected, refused)
        # A claim whose answer retention dropped (``prune_settled``) has nothing to transform until read again.
        cond = [instances.c.scheme_id == sid, instances.c.is_final.is_(True), instances.c.instance_id > after, due,
                instances.c.payload.is_not(None)]
        if instance_ids is not None:
            cond.append(among(instances.c.instance_id, instance_ids))
        if business_keys is not None:
            cond.append(among(instances.c.business_key, business_keys))
        query = (sa.select(instances.c.instance_id, instances.c.payload, instances.c.payload_version)
                 .where(*cond).order_by(instances.c.instance_id).limit(limit))
        with self.engine.connect() as conn:
            return [ClaimToTransform(r.instance_id, json.loads(r.payload), r.payload_version)
                    for r in conn.execute(query)]

    def prune_settled(self, loaded_before: datetime) -> Pruned:
        """Retention: drop the bulky staging of claims settled before ``loaded_before``.

        Settled = the bill is ``loaded`` (Kingdee holds it) since before the cut-off and its write-back
        comment is no longer due (posted, off, refused or unknown). Their ``dk_rows`` are deleted and their
        raw DingTalk answer (``dk_instances.payload``) is dropped. Kept, because exactly-once rests on
        them: the ``dk_instances`` row (status, business id: a claim listed again is known and final, not
        read again), the ``dk_bills`` row (business id, match value, Kingdee bill: the duplicate check and
        the loaded-bill lock) and the ``dk_writeback`` ledger (the comment is never posted twice). A claim
        read again later gets its answer back; its bill stays locked as loaded. Rejected claims are
        kept whole (replay transforms their stored answer).
        """
        sid = self.scheme_id
        has_rows = sa.exists().where(rows.c.scheme_id == sid, rows.c.instance_id == bills.c.instance_id)
        has_payload = sa.exists().where(instances.c.scheme_id == sid, instances.c.instance_id == bills.c.instance_id,
                                        instances.c.payload.is_not(None))
        settled = (sa.select(bills.c.instance_id)
                   .join(writeback, sa.and_(writeback.c.scheme_id == bills.c.scheme_id,
                                            writeback.c.instance_id == bills.c.instance_id))
                   .where(bills.c.scheme_id == sid, bills.c.state == BillState.LOADED,
                          bills.c.loaded_at < loaded_before,
                          writeback.c.comment_state.not_in([CommentState.PENDING, CommentState.SENDING]),
                          sa.or_(has_rows, has_payload))
                   .order_by(bills.c.instance_id))
        with self.engine.connect() as conn:
            claim_ids = list(conn.execute(settled).scalars())
        deleted = dropped = 0
        for part in chunked(claim_ids, IN_CHUNK):  # one short transaction per chunk: runs go on beside it
            with self.engine.begin() as conn:
                self._lock(conn)
                deleted += conn.execute(rows.delete().where(rows.c.scheme_id == sid, rows.c.instance_id.in_(part))
                                        ).rowcount
                # Only an answer already transformed: one read since (not transformed yet) is kept.
                dropped += conn.execute(instances.update().where(
                    instances.c.scheme_id == sid, instances.c.instance_id.in_(part), instances.c.payload.is_not(None),
                    instances.c.transformed_version == instances.c.payload_version).values(payload=None)).rowcount
        return Pruned(claims=len(claim_ids), rows=deleted, payloads=dropped)

    def stored_answers(self) -> Iterator[dict]:
        """The latest DingTalk answer of every stored claim, in id order (value-map suggestions read
        the options the claims carry)."""
        query = (sa.select(instances.c.payload)
                 .where(instances.c.scheme_id == self.scheme_id, instances.c.payload.is_not(None))
                 .order_by(instances.c.instance_id))
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield json.loads(row.payload)

    def billed_business_ids(self, business_ids: Iterable[str], exclude: Iterable[str] = ()) -> dict[str, str]:
        """business_id → instance_id of this scheme's bills for these business_ids, other than the claims
        in ``exclude`` (the transform's duplicate check needs no more than the chunk's own business_ids).
        Compared without case (ASCII), as Kingdee compares them: ``tsp1`` finds the bill of ``TSP1``."""
        skip = set(exclude)
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for part in chunked(sorted({storable(b).upper() for b in business_ids if b}), IN_CHUNK):
                query = sa.select(bills.c.business_id, bills.c.instance_id).where(
                    bills.c.scheme_id == self.scheme_id, sa.func.upper(bills.c.business_id).in_(part))
                found.update({r.business_id: r.instance_id for r in conn.execute(query) if r.instance_id not in skip})
        return found

    def save_transform(self, versions: Mapping[str, int], new_bills: Sequence[BillRecord],
                       new_rejects: Sequence[RejectRecord], new_rows: Sequence[RowRecord], run_id: str,
                       ) -> SavedTransform:
        """Store one chunk's outcome (claim → transformed version) in one transaction.

        A claim whose bill may already be in Kingdee (sending / unknown / loaded) is never touched
        again: its bill stands as sent, and a new outcome for it is ignored. Pending or failed bills
        are replaced. A bill whose amount staging cannot hold exactly is a reject. If the database
        refuses the chunk for one claim's data, the chunk is stored claim by claim and only the
        refused claim becomes a reject (``staging_refused``, with the database's message).
        """
        new_bills, out_of_range = _within_range(new_bills)
        new_rejects = [*new_rejects, *out_of_range]
        try:
            return self._save_chunk(versions, new_bills, new_rejects, new_rows, run_id)
        except sa.exc.DBAPIError as exc:
            if not refused_by_data(exc):
                raise
            log.warning("staging: a chunk of %d claims was refused (%s): storing it claim by claim", len(versions),
                        first_line(exc))
        bills_of, rejects_of, rows_of = _by_claim(new_bills), _by_claim(new_rejects), _by_claim(new_rows)
        totals = SavedTransform(0, 0, 0)
        for instance_id, version in versions.items():
            outcome = ({instance_id: version}, bills_of.get(instance_id, []), rejects_of.get(instance_id, []))
            try:
                saved = self._save_chunk(*outcome, rows_of.get(instance_id, []), run_id)
            except sa.exc.DBAPIError as exc:
                if not refused_by_data(exc):
                    raise
                log.warning("staging: claim %.80r refused (%s): rejected", instance_id, first_line(exc))
                business_id = next((r.business_id for r in (*outcome[1], *outcome[2]) if r.business_id), None)
                refused = RejectRecord(instance_id, business_id, None, RejectReason.STAGING_REFUSED,
                                       f"claim {instance_id}: the staging database refused its outcome "
                                       f"({first_line(exc)})")
                saved = self._save_chunk({instance_id: version}, [], [refused], [], run_id)
            totals = SavedTransform(totals.bills + saved.bills, totals.rejects + saved.rejects,
                                    totals.kept_sent + saved.kept_sent)
        return totals

    def _save_chunk(self, versions: Mapping[str, int], new_bills: Sequence[BillRecord],
                    new_rejects: Sequence[RejectRecord], new_rows: Sequence[RowRecord], run_id: str,
                    ) -> SavedTransform:
        sid = self.scheme_id
        stamp = now()
        claim_ids = list(versions)
        with self.engine.begin() as conn:
            self._lock(conn)
            locked = set(conn.execute(sa.select(bills.c.instance_id).where(
                bills.c.scheme_id == sid, among(bills.c.instance_id, claim_ids), bills.c.state.in_(MAY_BE_IN_KINGDEE),
            )).scalars())
            for part in chunked([i for i in claim_ids if i not in locked], IN_CHUNK):
                conn.execute(rejects.delete().where(rejects.c.scheme_id == sid, rejects.c.instance_id.in_(part)))
                # Only bills not yet sent are replaced; the state filter holds even if a claim slipped in.
                conn.execute(bills.delete().where(bills.c.scheme_id == sid, bills.c.instance_id.in_(part),
                                                  bills.c.state.in_(REPLACEABLE)))
            for part in chunked(claim_ids, IN_CHUNK):
                conn.execute(rows.delete().where(rows.c.scheme_id == sid, rows.c.instance_id.in_(part)))
            bill_values = [
                dict(scheme_id=sid, instance_id=b.instance_id, business_id=b.business_id,
                     match_value=b.match_value, amount_cents=to_cents(b.amount), payee=b.payee,
                     model=json.dumps(b.model, ensure_ascii=False), state=BillState.PENDING, attempts=0,
                     created_at=stamp, updated_at=stamp, last_run=run_id)
                for b in new_bills if b.instance_id not in locked
            ]
            # A row still there was sent meanwhile: keep it. (A clash on match_value still raises.)
            _insert_rows(conn, bills, bill_values, ("scheme_id", "instance_id"))
            reject_values = [
                dict(scheme_id=sid, instance_id=r.instance_id, business_id=r.business_id, field=r.field,
                     reason_code=r.reason_code, reason=r.reason, created_at=stamp, run_id=run_id)
                for r in new_rejects if r.instance_id not in locked
            ]
            _insert_rows(conn, rejects, reject_values)
            row_values = [
                dict(scheme_id=sid, instance_id=r.instance_id, table_path=r.table_path, row_key=r.row_key,
                     parent_row_key=r.parent_row_key, row_index=r.row_index,
                     cells=json.dumps(r.cells, ensure_ascii=False, default=str))
                for r in new_rows
            ]
            _insert_rows(conn, rows, row_values, ("scheme_id", "instance_id", "table_path", "row_key"))
            for instance_id, version in versions.items():
                conn.execute(instances.update().where(
                    instances.c.scheme_id == sid, instances.c.instance_id == instance_id,
                ).values(transformed_version=version))
        return SavedTransform(bills=len(bill_values), rejects=len({r["instance_id"] for r in reject_values}),
                              kept_sent=len(locked))

    def stamp_rejects(self, instance_ids: Sequence[str], fingerprint: str) -> None:
        """Record the scheme fingerprint these claims' rejects were made under."""
        with self.engine.begin() as conn:
            self._lock(conn)  # an overlapping run may be rewriting the same claims' rejects
            for part in chunked(list(instance_ids), IN_CHUNK):
                conn.execute(rejects.update()
                             .where(rejects.c.scheme_id == self.scheme_id, rejects.c.instance_id.in_(part))
                             .values(scheme_fingerprint=fingerprint))

    # -- bills -----------------------------------------------------------------------------------

    def bills_in_doubt(self, lease: timedelta, instance_ids: Collection[str] | None = None) -> list[BillInDoubt]:
        """Bills whose fate in Kingdee is not known here.

        ``unknown`` bills of any age, and ``sending`` bills whose sender went quiet for longer than
        ``lease`` (a crashed or killed task); younger ``sending`` bills belong to a load that may still
        be running. Ages are read on the database's clock. ``lease_expired`` says whether a save of the
        bill may still be committing: a lookup that misses such a bill proves nothing yet.
        """
        with self.engine.connect() as conn:
            expired = sa.func.coalesce(bills.c.sent_at < db_time_ago(conn, lease), True)
            cond = [bills.c.scheme_id == self.scheme_id,
                    sa.or_(bills.c.state == BillState.UNKNOWN,
                           sa.and_(bills.c.state == BillState.SENDING, expired))]
            if instance_ids is not None:
                cond.append(among(bills.c.instance_id, instance_ids))
            query = (sa.select(bills.c.instance_id, bills.c.match_value, bills.c.business_id,
                               expired.label("expired"))
                     .where(*cond).order_by(bills.c.instance_id))
            return [BillInDoubt(r.instance_id, r.match_value, bool(r.expired), r.business_id)
                    for r in conn.execute(query)]

    def claim_for_sending(self, limit: int, instance_ids: Collection[str] | None = None) -> list[ClaimedBill]:
        """Atomically move up to ``limit`` pending bills to ``sending`` and return them.

        The conditional UPDATE is what keeps two concurrent loads from sending the same bill: a row
        another load claimed first no longer matches ``state = 'pending'``.
        """
        sid = self.scheme_id
        token = uuid.uuid4().hex
        stamp = now()
        with self.engine.begin() as conn:
            self._lock(conn)  # never between a transform's look at sent bills and its rewrite
            cond = [bills.c.scheme_id == sid, bills.c.state.in_(SENDABLE)]
            if instance_ids is not None:
                cond.append(among(bills.c.instance_id, instance_ids))
            candidates = list(conn.execute(
                sa.select(bills.c.instance_id).where(*cond).order_by(bills.c.instance_id).limit(limit)).scalars())
            if candidates:
                # sent_at on the database clock: the lease other loads measure must not follow this worker's.
                conn.execute(bills.update()
                             .where(bills.c.scheme_id == sid, among(bills.c.instance_id, candidates),
                                    bills.c.state.in_(SENDABLE))
                             .values(state=BillState.SENDING, claim_token=token, sent_at=db_now(conn),
                                     updated_at=stamp, attempts=bills.c.attempts + 1))
        with self.engine.connect() as conn:
            return [
                ClaimedBill(r.instance_id, r.business_id, r.match_value, from_cents(r.amount_cents),
                            json.loads(r.model))
                for r in conn.execute(
                    sa.select(bills).where(bills.c.scheme_id == sid, bills.c.claim_token == token,
                                           bills.c.state == BillState.SENDING).order_by(bills.c.instance_id))
            ]

    def _move(self, instance_ids: Sequence[str], state: BillState, run_id: str, from_states: Collection[BillState],
              **values: Any) -> int:
        """Move bills to ``state`` (only from one of ``from_states``); returns how many moved."""
        moved = 0
        with self.engine.begin() as conn:
            for part in chunked(list(instance_ids), IN_CHUNK):
                moved += conn.execute(
                    bills.update()
                    .where(bills.c.scheme_id == self.scheme_id, bills.c.instance_id.in_(part),
                           bills.c.state.in_(list(from_states)))
                    .values(state=state, updated_at=now(), last_run=run_id, **values)
                ).rowcount
        return moved

    def mark_loaded(self, instance_id: str, run_id: str, *, kingdee_id: str | None, bill_number: str | None,
                    doc_status: str | None, from_states: Collection[BillState] = (BillState.SENDING,)) -> bool:
        """Kingdee holds this bill (saved now, or found by its match value). True if it moved."""
        values: dict[str, Any] = dict(loaded_at=now(), kingdee_id=kingdee_id, bill_number=bill_number,
                                      claim_token=None, last_error=None)
        if doc_status:
            values["doc_status"] = doc_status
        return self._move([instance_id], BillState.LOADED, run_id, from_states, **values) == 1

    def mark_refused(self, instance_id: str, run_id: str, reason: str,
                     from_states: Collection[BillState] = (BillState.SENDING,)) -> bool:
        """Kingdee refused this bill's model: ``failed`` with the reason, until a fix and a replay."""
        return self._move([instance_id], BillState.FAILED, run_id, from_states, last_error=reason) == 1

    def mark_unknown(self, instance_ids: Sequence[str], run_id: str, error: str) -> int:
        """Sent without a usable answer: settled by querying Kingdee before anything is resent."""
        return self._move(instance_ids, BillState.UNKNOWN, run_id, (BillState.SENDING,), last_error=error)

    def return_to_pending(self, instance_ids: Sequence[str], run_id: str, error: str,
                          from_states: Collection[BillState] = (BillState.SENDING,)) -> int:
        """Certainly not in Kingdee: to be sent again (by this load or a later one)."""
        return self._move(instance_ids, BillState.PENDING, run_id, from_states, last_error=error, claim_token=None)

    def loaded_bills_behind(self, wanted: DocumentStatus) -> list[LoadedBill]:
        """Loaded bills not yet at document status ``wanted``."""
        with self.engine.connect() as conn:
            return [LoadedBill(r.instance_id, r.bill_number, r.doc_status)
                    for r in conn.execute(sa.select(bills.c.instance_id, bills.c.bill_number, bills.c.doc_status)
                                          .where(bills.c.scheme_id == self.scheme_id,
                                                 bills.c.state == BillState.LOADED,
                                                 sa.or_(bills.c.doc_status.is_(None), bills.c.doc_status != wanted))
                                          .order_by(bills.c.instance_id))]

    def record_bill_error(self, instance_id: str, error: str) -> None:
        """Note what went wrong with this bill's follow-up (a lookup, a submit) without moving it."""
        with self.engine.begin() as conn:
            conn.execute(bills.update()
                         .where(bills.c.scheme_id == self.scheme_id, bills.c.instance_id == instance_id)
                         .values(last_error=error, updated_at=now()))

    def record_doc_status(self, instance_ids: Sequence[str], doc_status: str) -> None:
        """Kingdee reports these bills at ``doc_status`` (a ``DocumentStatus`` value, stored as given)."""
        with self.engine.begin() as conn:
            for part in chunked(list(instance_ids), IN_CHUNK):
                conn.execute(bills.update()
                             .where(bills.c.scheme_id == self.scheme_id, bills.c.instance_id.in_(part))
                             .values(doc_status=doc_status, last_error=None, updated_at=now()))

    def bills(self, state: BillState | None = None, instance_ids: Collection[str] | None = None,
              ) -> dict[str, StagedBill]:
        """This scheme's bills by claim, optionally only those in ``state`` or of ``instance_ids``."""
        cond = [bills.c.scheme_id == self.scheme_id]
        if state is not None:
            cond.append(bills.c.state == state)
        if instance_ids is not None:
            cond.append(among(bills.c.instance_id, instance_ids))
        with self.engine.connect() as conn:
            return {r.instance_id: _staged_bill(r)
                    for r in conn.execute(sa.select(bills).where(*cond).order_by(bills.c.instance_id))}

    # -- write-back ledger -----------------------------------------------------------------------

    def record_ledger(self, comments_enabled: bool) -> int:
        """Add a ledger line for every loaded bill that has none; returns how many were added."""
        sid = self.scheme_id
        stamp = now()
        with self.engine.begin() as conn:
            missing = conn.execute(sa.select(bills).where(
                bills.c.scheme_id == sid, bills.c.state == BillState.LOADED,
                ~sa.exists().where(writeback.c.scheme_id == sid, writeback.c.instance_id == bills.c.instance_id),
            )).all()
            values = [
                dict(scheme_id=sid, instance_id=b.instance_id, business_id=b.business_id, kingdee_id=b.kingdee_id,
                     bill_number=b.bill_number, payee=b.payee, amount_cents=b.amount_cents, loaded_at=b.loaded_at,
                     recorded_at=stamp,
                     comment_state=CommentState.PENDING if comments_enabled else CommentState.OFF)
                for b in missing
            ]
            _insert_rows(conn, writeback, values, ("scheme_id", "instance_id"))
        return len(values)

    def comments_to_post(self, instance_ids: Collection[str] | None = None) -> list[CommentToPost]:
        """Ledger lines whose comment is still to be posted (read only; ``claim_comments`` claims them).
        A comment that failed, got no answer or was interrupted is not posted again by itself: an
        employee seeing "paid" twice is worse than a missing note."""
        cond = [writeback.c.scheme_id == self.scheme_id, writeback.c.comment_state == CommentState.PENDING]
        if instance_ids is not None:
            cond.append(among(writeback.c.instance_id, instance_ids))
        with self.engine.connect() as conn:
            pending = list(conn.execute(sa.select(writeback.c.instance_id).where(*cond)).scalars())
        return self._comments(pending)

    def claim_comments(self, limit: int | None = None, instance_ids: Collection[str] | None = None,
                       ) -> list[CommentToPost]:
        """Move pending comments to ``sending`` and return those this call won.

        The conditional UPDATE (``WHERE comment_state = 'pending'``) is what keeps two write_backs
        from posting one comment: a row another claimed first no longer matches. ``commented_at`` is
        the claim time on the database clock (``expire_comment_sends``).
        """
        sid = self.scheme_id
        cond = [writeback.c.scheme_id == sid, writeback.c.comment_state == CommentState.PENDING]
        if instance_ids is not None:
            cond.append(among(writeback.c.instance_id, instance_ids))
        with self.engine.connect() as conn:
            query = sa.select(writeback.c.instance_id).where(*cond).order_by(writeback.c.instance_id)
            candidates = list(conn.execute(query if limit is None else query.limit(limit)).scalars())
        won: list[str] = []
        for part in chunked(candidates, IN_CHUNK):
            with self.engine.begin() as conn:
                won.extend(conn.execute(
                    writeback.update()
                    .where(writeback.c.scheme_id == sid, writeback.c.instance_id.in_(part),
                           writeback.c.comment_state == CommentState.PENDING)
                    .values(comment_state=CommentState.SENDING, commented_at=db_now(conn))
                    .returning(writeback.c.instance_id)).scalars())
        return self._comments(won)

    def _comments(self, instance_ids: Sequence[str]) -> list[CommentToPost]:
        found: list[CommentToPost] = []
        with self.engine.connect() as conn:
            for part in chunked(sorted(instance_ids), IN_CHUNK):
                query = (sa.select(writeback, instances.c.payload)
                         .join(instances, sa.and_(instances.c.scheme_id == writeback.c.scheme_id,
                                                  instances.c.instance_id == writeback.c.instance_id))
                         .where(writeback.c.scheme_id == self.scheme_id, writeback.c.instance_id.in_(part))
                         .order_by(writeback.c.instance_id))
                found.extend(
                    CommentToPost(instance_id=r.instance_id, business_id=r.business_id, bill_number=r.bill_number,
                                  payee=r.payee, amount=from_cents(r.amount_cents),
                                  originator_userid=str(json.loads(r.payload).get("originator_userid") or ""))
                    for r in conn.execute(query))
        return found

    def expire_comment_sends(self, lease: timedelta) -> int:
        """Comments left ``sending`` longer than ``lease`` (their write_back died): ``unknown``, never resent."""
        with self.engine.begin() as conn:
            return conn.execute(writeback.update().where(
                writeback.c.scheme_id == self.scheme_id, writeback.c.comment_state == CommentState.SENDING,
                writeback.c.commented_at < db_time_ago(conn, lease),
            ).values(comment_state=CommentState.UNKNOWN,
                     comment_error="interrupted while sending: it may have been posted, so it is not resent")
            ).rowcount

    def _set_comment_state(self, instance_id: str, state: CommentState, error: str | None) -> None:
        with self.engine.begin() as conn:
            values: dict[str, Any] = dict(comment_state=state, comment_error=error)
            if state == CommentState.DONE:
                values["commented_at"] = now()
            conn.execute(writeback.update().where(
                writeback.c.scheme_id == self.scheme_id, writeback.c.instance_id == instance_id,
                writeback.c.comment_state.in_([CommentState.SENDING, CommentState.PENDING]),
            ).values(**values))

    def mark_comment_posted(self, instance_id: str) -> None:
        self._set_comment_state(instance_id, CommentState.DONE, None)

    def mark_comment_refused(self, instance_id: str, error: str) -> None:
        self._set_comment_state(instance_id, CommentState.FAILED, error)

    def mark_comment_unanswered(self, instance_id: str, error: str) -> None:
        """No answer: the comment may have been posted, so it is not posted again."""
        self._set_comment_state(instance_id, CommentState.UNKNOWN, error)

    def return_comment_to_pending(self, instance_id: str, error: str) -> None:
        """A claimed comment that surely was not posted (DingTalk's monthly quota refused it): pending again."""
        self._set_comment_state(instance_id, CommentState.PENDING, error)

    # -- reporting -------------------------------------------------------------------------------

    def summary(self, run_id: str | None = None, instance_ids: Collection[str] | None = None) -> Summary:
        """Where the scheme's claims stand: all of them; with ``instance_ids``, those; with ``run_id``,
        the claims that run listed and those whose bill it moved (a bill loaded or refused for an
        earlier listing belongs to the run that sent it)."""
        sid = self.scheme_id
        inst_cond = [instances.c.scheme_id == sid]
        if instance_ids is not None:
            inst_cond.append(among(instances.c.instance_id, instance_ids))
        elif run_id is not None:
            moved = sa.select(bills.c.instance_id).where(bills.c.scheme_id == sid, bills.c.last_run == run_id)
            inst_cond.append(sa.or_(instances.c.last_seen_run == run_id, instances.c.instance_id.in_(moved)))
        seen = sa.select(instances.c.instance_id).where(*inst_cond)
        with self.engine.connect() as conn:
            status_counts = {
                (r.status, r.result): r.n for r in conn.execute(
                    sa.select(instances.c.status, instances.c.result, sa.func.count().label("n"))
                    .where(*inst_cond).group_by(instances.c.status, instances.c.result))
            }
            bill_rows = conn.execute(
                sa.select(bills.c.state, sa.func.count().label("n"), *_exact_sum(bills.c.amount_cents, "cents"))
                .where(bills.c.scheme_id == sid, bills.c.instance_id.in_(seen)).group_by(bills.c.state)).all()
            reject_rows = conn.execute(
                sa.select(rejects.c.reason_code, sa.func.count(sa.distinct(rejects.c.instance_id)).label("n"))
                .where(rejects.c.scheme_id == sid, rejects.c.instance_id.in_(seen))
                .group_by(rejects.c.reason_code)).all()
            comment_rows = conn.execute(
                sa.select(writeback.c.comment_state, sa.func.count().label("n"))
                .where(writeback.c.scheme_id == sid, writeback.c.instance_id.in_(seen))
                .group_by(writeback.c.comment_state)).all()
            rejected = conn.execute(
                sa.select(rejects.c.instance_id, rejects.c.business_id, rejects.c.reason_code, rejects.c.reason,
                          rejects.c.field)
                .where(rejects.c.scheme_id == sid, rejects.c.instance_id.in_(seen))
                .order_by(rejects.c.business_id, rejects.c.id)).all()
            problems = conn.execute(
                sa.select(bills.c.instance_id, bills.c.business_id, bills.c.state, bills.c.amount_cents,
                          bills.c.last_error)
                .where(bills.c.scheme_id == sid, bills.c.instance_id.in_(seen),
                       bills.c.state.in_([BillState.FAILED, BillState.UNKNOWN]))
                .order_by(bills.c.business_id)).all()
        return Summary(
            claims_seen=sum(status_counts.values()),
            claims_by_status={f"{s}/{r or '-'}": n for (s, r), n in sorted(status_counts.items())},
            approved=sum(n for (s, r), n in status_counts.items()
                         if s == InstanceStatus.COMPLETED and r == InstanceResult.AGREE),
            still_running=sum(n for (s, _), n in status_counts.items() if s in OPEN_STATUSES),
            bills_by_state={BillState(r.state): r.n for r in bill_rows},
            money_by_state={BillState(r.state): from_cents(_combined(r, "cents")) for r in bill_rows},
            rejected_by_reason={r.reason_code: r.n for r in reject_rows},
            comments_by_state={CommentState(r.comment_state): r.n for r in comment_rows},
            rejected_claims=[RejectedClaim(r.instance_id, r.business_id, r.reason_code, r.reason, r.field)
                             for r in rejected],
            problem_bills=[ProblemBill(r.instance_id, r.business_id, BillState(r.state), from_cents(r.amount_cents),
                                       r.last_error) for r in problems],
        )

    # -- the alert ledger ------------------------------------------------------------------------

    def alerts_not_yet_sent(self, candidates: Sequence[AlertRecord]) -> list[AlertRecord]:
        """Those of ``candidates`` never alerted, or alerted with another fingerprint (the problem changed)."""
        sent: dict[tuple[str, str], str] = {}
        with self.engine.connect() as conn:
            for part in chunked(sorted({c.instance_id for c in candidates}), IN_CHUNK):
                sent.update({(r.instance_id, r.reason_code): r.fingerprint for r in conn.execute(
                    sa.select(alerts.c.instance_id, alerts.c.reason_code, alerts.c.fingerprint)
                    .where(alerts.c.scheme_id == self.scheme_id, alerts.c.instance_id.in_(part)))})
        return [c for c in candidates if sent.get((c.instance_id, c.reason_code)) != c.fingerprint]

    def record_alerts(self, sent: Sequence[AlertRecord], run_id: str) -> None:
        """These problems were alerted now: not again until their fingerprint changes."""
        if not sent:
            return
        stamp = now()
        with self.engine.begin() as conn:
            for c in sent:
                conn.execute(alerts.delete().where(alerts.c.scheme_id == self.scheme_id,
                                                   alerts.c.instance_id == c.instance_id,
                                                   alerts.c.reason_code == c.reason_code))
            conn.execute(alerts.insert(), [
                dict(scheme_id=self.scheme_id, instance_id=c.instance_id, reason_code=c.reason_code,
                     fingerprint=c.fingerprint, alerted_at=stamp, run_id=run_id) for c in sent])

