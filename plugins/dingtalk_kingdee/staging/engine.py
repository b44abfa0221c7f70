"""The staging database's engine and schema: one engine per URL per process, tables created or upgraded
by code.

SQLite files get their folder, WAL mode and ``BEGIN IMMEDIATE`` (concurrent runs queue for the write
lock instead of failing); PostgreSQL gets pre-pinged connections and an advisory lock around schema
creation.
"""

from __future__ import annotations

import sqlite3
import time
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dingtalk_kingdee.staging.upgrades import upgrade

# Any fixed number: the PostgreSQL advisory lock that lets one schema creator in at a time.
_SCHEMA_LOCK_KEY = 424242


def create_engine(url: str) -> Engine:
    """A new engine for the staging database; SQLite files get their folder, WAL and immediate writes.

    ``hide_parameters``: a database error's text would otherwise list the statement's values (other
    claims' payees and bank accounts) and end up in the task log.
    """
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        if sa_url.database and sa_url.database != ":memory:":
            Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

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
    return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)


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
    """Create or upgrade the staging tables (``upgrades.upgrade``); safe when several tasks start at once
    (SQLite's immediate transactions and PostgreSQL's advisory lock let one creator in at a time)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Serialise concurrent first runs: CREATE TABLE IF NOT EXISTS races on PostgreSQL.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})")
        upgrade(conn)


def connect(url: str) -> Engine:
    """The process's engine for ``url``, its tables created or upgraded."""
    engine = get_engine(url)
    ensure_schema(engine)
    return engine
