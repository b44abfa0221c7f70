"""The DingTalk call ledger: every call per scheme, run, step and API, in the calendar month it was
made in (China time, DingTalk's month); and the month's budget and quota events.

DingTalk's monthly quota belongs to the organisation, so the month's total is summed over every
scheme of this staging database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dingtalk_kingdee.china_time import CHINA
from dingtalk_kingdee.staging.tables import call_events, call_ledger

# gettoken is taken as unmetered (UNVERIFIED; the reference names list / detail / comment / contacts).
UNMETERED_APIS = frozenset({"gettoken"})


def month_of(moment: datetime) -> str:
    """``YYYY-MM`` of ``moment`` in China time: DingTalk's quota resets on the 1st there."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} is naive: give the time with its offset")
    return moment.astimezone(CHINA).strftime("%Y-%m")


@dataclass(frozen=True)
class CallEvent:
    month: str
    kind: str
    scheme_id: str
    run_id: str | None
    detail: str | None
    at: datetime
    cleared_at: datetime | None


class CallLedger:
    """The organisation's DingTalk calls as this project made them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, scheme_id: str, run_id: str, step: str, counts: Mapping[str, int], at: datetime) -> None:
        """Add ``counts`` (calls per API) to the ledger of this run and step, in the month of ``at``.
        A step run again (a cleared task) adds its new calls: they were made too."""
        month = month_of(at)
        stamp = at.astimezone(UTC)
        with self.engine.begin() as conn:
            for api, calls in counts.items():
                if not calls:
                    continue
                key = (call_ledger.c.scheme_id == scheme_id, call_ledger.c.run_id == run_id,
                       call_ledger.c.step == step, call_ledger.c.api == api)
                updated = conn.execute(call_ledger.update().where(*key).values(
                    calls=call_ledger.c.calls + int(calls), recorded_at=stamp))
                if updated.rowcount == 0:
                    conn.execute(call_ledger.insert().values(
                        scheme_id=scheme_id, run_id=run_id, step=step, api=api, month=month, calls=int(calls),
                        metered=api not in UNMETERED_APIS, recorded_at=stamp))

    def month_total(self, month: str) -> int:
        """Metered calls of ``month``, every scheme together."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(call_ledger.c.calls), 0)).where(
                call_ledger.c.month == month, call_ledger.c.metered.is_(True))).scalar() or 0)

    def month_by_api(self, month: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {r.api: int(r.calls) for r in conn.execute(
                sa.select(call_ledger.c.api, sa.func.sum(call_ledger.c.calls).label("calls"))
                .where(call_ledger.c.month == month).group_by(call_ledger.c.api))}

    def run_calls(self, scheme_id: str, run_id: str) -> dict[str, int]:
        """Calls of one run per API (every step)."""
        with self.engine.connect() as conn:
            return {r.api: int(r.calls) for r in conn.execute(
                sa.select(call_ledger.c.api, sa.func.sum(call_ledger.c.calls).label("calls"))
                .where(call_ledger.c.scheme_id == scheme_id, call_ledger.c.run_id == run_id)
                .group_by(call_ledger.c.api))}

    def step_runs(self, scheme_id: str, step: str, month: str) -> dict[str, dict[str, int]]:
        """Per run id, the calls per API one step of the scheme made in ``month`` (a value-map run's
        ``valuemaps`` step, say)."""
        runs: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(call_ledger.c.run_id, call_ledger.c.api, call_ledger.c.calls).where(
                    call_ledger.c.scheme_id == scheme_id, call_ledger.c.step == step, call_ledger.c.month == month)):
                runs.setdefault(r.run_id, {})[r.api] = int(r.calls)
        return runs

    # -- events ----------------------------------------------------------------------------------

    def note_event(self, month: str, kind: str, scheme_id: str, run_id: str | None, detail: str,
                   at: datetime) -> bool:
        """Record that ``kind`` happened in ``month``; True only the first time (or the first time after
        it was cleared): the caller alerts then, once."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(call_events.c.cleared_at).where(
                call_events.c.month == month, call_events.c.kind == kind)).first()
            if row is not None and row.cleared_at is None:
                return False
            values = {"scheme_id": scheme_id, "run_id": run_id, "detail": detail, "at": at.astimezone(UTC),
                      "cleared_at": None}
            if row is None:
                conn.execute(call_events.insert().values(month=month, kind=kind, **values))
            else:
                conn.execute(call_events.update().where(call_events.c.month == month, call_events.c.kind == kind)
                             .values(**values))
            return True

    def event(self, month: str, kind: str) -> CallEvent | None:
        """The month's open (not cleared) event of this kind, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(call_events).where(
                call_events.c.month == month, call_events.c.kind == kind, call_events.c.cleared_at.is_(None))).first()
        if row is None:
            return None
        return CallEvent(row.month, row.kind, row.scheme_id, row.run_id, row.detail, row.at, row.cleared_at)

    def clear_event(self, month: str, kind: str, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(call_events.update().where(
                call_events.c.month == month, call_events.c.kind == kind, call_events.c.cleared_at.is_(None))
                .values(cleared_at=at.astimezone(UTC)))
