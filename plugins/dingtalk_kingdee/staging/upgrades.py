"""Bringing an existing staging database up to ``tables.py``, on PostgreSQL and SQLite.

Three kinds of change, applied in this order inside the caller's transaction (which holds the schema
lock):

1. a table declared in ``tables.py`` and missing from the database is created;
2. a column declared in ``tables.py`` and missing from its table is added, as long as it may be added
   to rows already there (nullable, or with a ``server_default``); so is a missing declared index.
   Adding such a column or index needs no version bump and no upgrade function;
3. every other change (a type, a constraint, a NOT NULL column without a server default, a rename, a
   data fix) is a numbered step: bump ``tables.SCHEMA_VERSION`` and add one function to ``STEPS``
   under the new number. Steps run once each, in order, and each is recorded in ``dk_schema_version``.

A fresh database gets the tables as declared and is recorded at ``SCHEMA_VERSION`` directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dingtalk_kingdee.staging.repository import business_key
from dingtalk_kingdee.staging.tables import SCHEMA_VERSION, alerts, instances, metadata, rejects, schema_version

log = logging.getLogger(__name__)


class SchemaError(RuntimeError):
    """The database cannot be brought to this code's schema (newer than the code, or a change with no step)."""


def _widen_ids_to_text(conn: Connection) -> None:
    """Version 2: ids, names and keys that come from DingTalk become unbounded text.

    A valid DingTalk answer may carry a business_id or instance id longer than 64 characters, a
    payee longer than 255, or a nested table whose row key passes 255 characters; a ``varchar(n)``
    refused such a claim with an error that stopped its whole chunk. PostgreSQL widens varchar to
    text without rewriting the table. SQLite does not enforce a varchar length at all (its columns
    have type affinity only), so there is nothing to change there.
    """
    if conn.dialect.name != "postgresql":
        return
    widened = {
        "dk_instances": ("instance_id", "business_id", "status", "result"),
        "dk_rows": ("instance_id", "table_path", "row_key", "parent_row_key"),
        "dk_bills": ("instance_id", "business_id", "match_value", "payee"),
        "dk_rejects": ("instance_id", "business_id", "field"),
        "dk_writeback": ("instance_id", "business_id", "payee"),
    }
    for table, columns in widened.items():
        changes = ", ".join(f"ALTER COLUMN {column} TYPE TEXT" for column in columns)
        conn.exec_driver_sql(f"ALTER TABLE {table} {changes}")


def _key_business_ids(conn: Connection) -> None:
    """Version 3: ``dk_instances.business_key`` filled in for the claims stored before it existed.

    Claims sharing a business id are transformed together, found by this key (the business id as the
    duplicate check compares it); a stored claim without it would not be found. Computed in Python
    (``business_key``): the databases' trim() and upper() differ from the transform's rule.
    """
    found = conn.execute(sa.select(instances.c.scheme_id, instances.c.instance_id, instances.c.business_id)
                         .where(instances.c.business_id.is_not(None), instances.c.business_key.is_(None))).all()
    keyed = [dict(s=r.scheme_id, i=r.instance_id, k=business_key(r.business_id)) for r in found]
    keyed = [k for k in keyed if k["k"] is not None]
    update = (instances.update()
              .where(instances.c.scheme_id == sa.bindparam("s"), instances.c.instance_id == sa.bindparam("i"))
              .values(business_key=sa.bindparam("k")))
    for start in range(0, len(keyed), 5000):
        conn.execute(update, keyed[start:start + 5000])


# Reason codes renamed, old stored text → new (the tables that store a reason code).
_RENAMED_REASONS = {"amount_over_limit": "amount_too_large"}


def _rename_reason_codes(conn: Connection) -> None:
    """Version 4: ``amount_over_limit`` is called ``amount_too_large``.

    A reject stored under the old code would otherwise be counted, reported and alerted under a code
    the code no longer knows; the alert ledger (``dk_alerts``, keyed by the code) keeps its
    fingerprints, so a problem already alerted is not alerted again for the rename.
    """
    for old, new in _RENAMED_REASONS.items():
        for table in (rejects, alerts):
            conn.execute(table.update().where(table.c.reason_code == old).values(reason_code=new))


# version → the function that brings a database from version - 1 to it.
STEPS: dict[int, Callable[[Connection], None]] = {
    2: _widen_ids_to_text,
    3: _key_business_ids,
    4: _rename_reason_codes,
}


def upgrade(conn: Connection) -> list[int]:
    """Create, extend and upgrade the staging tables; returns the numbered steps applied.

    The caller holds the schema lock (PostgreSQL advisory lock, SQLite's write lock) for the whole
    transaction, so concurrent first runs see one upgrade.
    """
    current = _recorded_version(conn)
    metadata.create_all(conn, checkfirst=True)
    stamp = datetime.now(UTC)
    if current is None:
        conn.execute(schema_version.insert().values(version=SCHEMA_VERSION, applied_at=stamp))
        return []
    if current > SCHEMA_VERSION:
        raise SchemaError(f"staging schema is version {current}, newer than this code ({SCHEMA_VERSION}): "
                          "upgrade the code")
    _add_missing_columns(conn)
    applied: list[int] = []
    for version in range(current + 1, SCHEMA_VERSION + 1):
        if version not in STEPS:
            raise SchemaError(f"no upgrade step to staging schema version {version}")
        log.info("staging: upgrading the schema to version %d", version)
        STEPS[version](conn)
        conn.execute(schema_version.insert().values(version=version, applied_at=stamp))
        applied.append(version)
    _add_missing_columns(conn)  # a step may have made room for a column (e.g. backfilled a default)
    _check_complete(conn)
    _add_missing_indexes(conn)
    return applied


def _recorded_version(conn: Connection) -> int | None:
    if not sa.inspect(conn).has_table(schema_version.name):
        return None
    return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()


def _missing_columns(conn: Connection) -> list[sa.Column]:
    inspector = sa.inspect(conn)
    missing: list[sa.Column] = []
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing.extend(c for c in table.columns if c.name not in present)
    return missing


def _addable(column: sa.Column) -> bool:
    """Rows already in the table can take the column: it may be NULL, or the database fills it in."""
    return not column.primary_key and (column.nullable or column.server_default is not None)


def _add_missing_columns(conn: Connection) -> None:
    for column in _missing_columns(conn):
        if not _addable(column):
            continue
        spec = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        log.info("staging: adding column %s.%s", column.table.name, column.name)
        conn.exec_driver_sql(f"ALTER TABLE {column.table.name} ADD COLUMN {spec}")
    sa.inspect(conn).clear_cache()


def _check_complete(conn: Connection) -> None:
    sa.inspect(conn).clear_cache()
    missing = _missing_columns(conn)
    if missing:
        names = ", ".join(f"{c.table.name}.{c.name}" for c in missing)
        raise SchemaError(f"staging columns {names} cannot be added to existing rows (NOT NULL without a "
                          "server default, or part of the key): they need a numbered upgrade step")


def _add_missing_indexes(conn: Connection) -> None:
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present:
                log.info("staging: adding index %s", index.name)
                index.create(conn)
