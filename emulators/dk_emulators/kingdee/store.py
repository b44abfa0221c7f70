"""Bills in SQLite: one connection guarded by a lock, transactions the services open and close."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

from dk_emulators.kingdee.collation import collation_key
from dk_emulators.kingdee.wire import dumps, loads


@dataclass
class StoredBill:
    fid: int
    form_id: str
    bill_no: str
    status: str
    created: str
    header: dict[str, Any]
    entries: list[dict[str, Any]]

    def as_dict(self, entry_key: str) -> dict[str, Any]:
        reserved = {"FID", "FBILLNO", "FDOCUMENTSTATUS", "FCREATEDATE", entry_key.upper()}
        result = {k: v for k, v in self.header.items() if k.upper() not in reserved}
        result.update({"FID": self.fid, "FBillNo": self.bill_no, "FDOCUMENTSTATUS": self.status,
                       "FCREATEDATE": self.created, entry_key: [dict(e) for e in self.entries]})
        return result


class DuplicateNumber(Exception):
    pass


def number_key(bill_no: str) -> str:
    """Bill numbers are unique as Kingdee on SQL Server sees them (``collation``): ``dupa`` is ``DUPA``."""
    return collation_key(bill_no)


class BillStore:
    """Bills in SQLite (a file or ``:memory:``); one connection guarded by a lock, so thread-safe."""

    def __init__(self, db_path: str = ":memory:") -> None:
        self.lock = threading.RLock()
        self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._conn.create_function("number_key", 1, number_key, deterministic=True)
        self._conn.execute("PRAGMA journal_mode=WAL" if db_path != ":memory:" else "PRAGMA journal_mode=MEMORY")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS bills (
                fid INTEGER PRIMARY KEY, form_id TEXT NOT NULL, bill_no TEXT NOT NULL,
                status TEXT NOT NULL, created TEXT NOT NULL, header TEXT NOT NULL, entries TEXT NOT NULL,
                UNIQUE (form_id, bill_no));
            CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE UNIQUE INDEX IF NOT EXISTS bills_number_key ON bills (form_id, number_key(bill_no));
            """
        )
        # Parsed bills per form for queries; dropped on every write so it never goes stale.
        self._all_cache: dict[str, list[StoredBill]] = {}

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")
        self._all_cache.clear()

    def next_value(self, name: str, start: int) -> int:
        row = self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        value = start if row is None else row[0] + 1
        self._conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                           "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))
        return value

    def number_taken(self, form_id: str, bill_no: str, except_fid: int | None = None) -> bool:
        row = self._conn.execute("SELECT fid FROM bills WHERE form_id = ? AND number_key(bill_no) = ?",
                                 (form_id, number_key(bill_no))).fetchone()
        return row is not None and row[0] != except_fid

    def insert(self, bill: StoredBill) -> None:
        self._all_cache.clear()
        try:
            self._conn.execute(
                "INSERT INTO bills (fid, form_id, bill_no, status, created, header, entries) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bill.fid, bill.form_id, bill.bill_no, bill.status, bill.created, dumps(bill.header),
                 dumps(bill.entries)))
        except sqlite3.IntegrityError as exc:
            raise DuplicateNumber(bill.bill_no) from exc

    def update(self, bill: StoredBill) -> None:
        self._all_cache.clear()
        self._conn.execute(
            "UPDATE bills SET bill_no = ?, status = ?, header = ?, entries = ? WHERE fid = ?",
            (bill.bill_no, bill.status, dumps(bill.header), dumps(bill.entries), bill.fid))

    def delete(self, fid: int) -> None:
        self._all_cache.clear()
        self._conn.execute("DELETE FROM bills WHERE fid = ?", (fid,))

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[StoredBill]:
        with self.lock:
            rows = self._conn.execute(
                "SELECT fid, form_id, bill_no, status, created, header, entries FROM bills "
                f"WHERE {where} ORDER BY fid", params).fetchall()
        return [StoredBill(r[0], r[1], r[2], r[3], r[4], loads(r[5]), loads(r[6])) for r in rows]

    def all(self, form_id: str) -> list[StoredBill]:
        """Every bill of the form, oldest first; callers must not modify the returned objects."""
        with self.lock:
            if form_id not in self._all_cache:
                self._all_cache[form_id] = self._rows("form_id = ?", (form_id,))
            return list(self._all_cache[form_id])

    def by_number(self, form_id: str, bill_no: str) -> StoredBill | None:
        found = self._rows("form_id = ? AND number_key(bill_no) = ?", (form_id, number_key(bill_no)))
        return found[0] if found else None

    def by_id(self, form_id: str, fid: int) -> StoredBill | None:
        found = self._rows("form_id = ? AND fid = ?", (form_id, fid))
        return found[0] if found else None

    def count(self) -> int:
        with self.lock:
            return self._conn.execute("SELECT COUNT(*) FROM bills").fetchone()[0]

    def reset(self) -> None:
        with self.lock:
            self._conn.execute("DELETE FROM bills")
            self._conn.execute("DELETE FROM counters")
            self._all_cache.clear()
