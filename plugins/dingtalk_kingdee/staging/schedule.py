"""Where a scheme's hourly DingTalk listing stands (the watermark) and when each unfinished claim is
read next (the read schedule): what lets an idle hour cost one listing call, whatever the history.

Times are the run's own (``now`` = the end of its interval), never the clock: a cleared task works to
the same plan, and a benchmark can play a month of hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dingtalk_kingdee.staging.repository import IN_CHUNK, _insert_rows, chunked
from dingtalk_kingdee.staging.tables import instances, listing_watermarks, read_schedule

# The next read of a claim closed by a terminate/delete event: never (it stays known, so neither the
# listing nor the sweep takes it for a new claim).
NEVER = datetime(9999, 1, 1, tzinfo=UTC)
# DingTalk lists instances started at most 365 days ago: a closed claim older than that is never listed
# again and its row can go.
CLOSED_KEPT = timedelta(days=366)


@dataclass(frozen=True)
class Watermark:
    """Claims started before ``listed_until`` were listed; ``swept_at``: the last whole-window sweep;
    ``recent_swept_at``: the last sweep of the recent days only (event mode's nightly short sweep)."""

    listed_until: datetime
    swept_at: datetime | None
    recent_swept_at: datetime | None = None

    def last_sweep(self) -> datetime | None:
        """The last sweep of either kind (a whole sweep covers the recent days too)."""
        known = [t for t in (self.swept_at, self.recent_swept_at) if t is not None]
        return max(known) if known else None


@dataclass(frozen=True)
class DueRead:
    """A claim whose next read is due: ``reads`` so far (0 = listed, never read), current ``interval``."""

    instance_id: str
    reads: int
    interval: timedelta
    listed_at: datetime


class ReadSchedule:
    """One scheme's listing watermark and read schedule."""

    def __init__(self, engine: Engine, scheme_id: str) -> None:
        self.engine = engine
        self.scheme_id = scheme_id

    # -- the listing watermark -------------------------------------------------------------------

    def watermark(self) -> Watermark | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(listing_watermarks.c.listed_until, listing_watermarks.c.swept_at,
                                         listing_watermarks.c.recent_swept_at)
                               .where(listing_watermarks.c.scheme_id == self.scheme_id)).first()
        if row is None:
            return None
        return Watermark(_aware(row.listed_until), _aware(row.swept_at) if row.swept_at else None,
                         _aware(row.recent_swept_at) if row.recent_swept_at else None)

    def advance_watermark(self, listed_until: datetime, run_id: str, swept: bool = False,
                          swept_recent: bool = False) -> None:
        """Record a successful listing up to ``listed_until`` (``swept``: of the whole look-back;
        ``swept_recent``: of the recent days only); the watermark never moves back (a backfill of an
        older hour leaves it where it is)."""
        listed_until = _utc(listed_until)
        with self.engine.begin() as conn:
            current = conn.execute(sa.select(listing_watermarks.c.listed_until, listing_watermarks.c.swept_at,
                                             listing_watermarks.c.recent_swept_at)
                                   .where(listing_watermarks.c.scheme_id == self.scheme_id)
                                   .with_for_update()).first()
            if current is None:
                conn.execute(listing_watermarks.insert().values(
                    scheme_id=self.scheme_id, listed_until=listed_until, swept_at=listed_until if swept else None,
                    recent_swept_at=listed_until if swept_recent else None, updated_at=listed_until, run_id=run_id))
                return
            values: dict = {"updated_at": listed_until, "run_id": run_id}
            if listed_until > _aware(current.listed_until):
                values["listed_until"] = listed_until
            if swept and (current.swept_at is None or listed_until > _aware(current.swept_at)):
                values["swept_at"] = listed_until
            if swept_recent and (current.recent_swept_at is None or listed_until > _aware(current.recent_swept_at)):
                values["recent_swept_at"] = listed_until
            conn.execute(listing_watermarks.update().where(listing_watermarks.c.scheme_id == self.scheme_id)
                         .values(**values))

    def record_sweep(self, at: datetime, run_id: str, whole: bool) -> None:
        """Record a sweep that listed up to the watermark, which it leaves where it is (event mode:
        the watermark listing moves it): the recent days swept at ``at``, and the whole look-back if
        ``whole``."""
        at = _utc(at)
        column = listing_watermarks.c.recent_swept_at
        values: dict = {"recent_swept_at": sa.case((sa.or_(column.is_(None), column < at), at), else_=column),
                        "run_id": run_id}
        if whole:
            values["swept_at"] = sa.case((sa.or_(listing_watermarks.c.swept_at.is_(None),
                                                 listing_watermarks.c.swept_at < at), at),
                                         else_=listing_watermarks.c.swept_at)
        with self.engine.begin() as conn:
            conn.execute(listing_watermarks.update().where(listing_watermarks.c.scheme_id == self.scheme_id)
                         .values(**values))

    # -- the read schedule ----------------------------------------------------------------------

    def schedule_new(self, instance_ids: Iterable[str], now: datetime, first_interval: timedelta) -> int:
        """Listed claims neither stored nor scheduled: first read one interval from now (a claim started
        within the hour is nearly always still running). Returns how many were new."""
        return self._schedule(instance_ids, now + first_interval, first_interval, now)

    def schedule_unscheduled(self, now: datetime, first_interval: timedelta) -> int:
        """Stored unfinished claims without a schedule (stored by an explicit run, or before the
        schedule existed): due now."""
        with self.engine.connect() as conn:
            ids = list(conn.execute(sa.select(instances.c.instance_id).where(
                instances.c.scheme_id == self.scheme_id, instances.c.is_final.is_(False),
                ~sa.exists().where(read_schedule.c.scheme_id == self.scheme_id,
                                   read_schedule.c.instance_id == instances.c.instance_id))).scalars())
        return self._schedule(ids, now, first_interval, now, reads=1)

    def _schedule(self, instance_ids: Iterable[str], due: datetime, interval: timedelta, now: datetime,
                  reads: int = 0) -> int:
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return 0
        due, now = _utc(due), _utc(now)
        with self.engine.begin() as conn:
            known: set[str] = set()
            for part in chunked(ids, IN_CHUNK):
                known.update(conn.execute(sa.select(read_schedule.c.instance_id).where(
                    read_schedule.c.scheme_id == self.scheme_id, read_schedule.c.instance_id.in_(part))).scalars())
                known.update(conn.execute(sa.select(instances.c.instance_id).where(
                    instances.c.scheme_id == self.scheme_id, instances.c.instance_id.in_(part),
                    instances.c.is_final.is_(True))).scalars())
            fresh = [i for i in ids if i not in known]
            for part in chunked(fresh, IN_CHUNK):
                _insert_rows(conn, read_schedule, [
                    {"scheme_id": self.scheme_id, "instance_id": i, "next_read_at": due,
                     "interval_s": int(interval.total_seconds()), "reads": reads, "listed_at": now}
                    for i in part], ("scheme_id", "instance_id"))
        return len(fresh)

    def unknown_among(self, instance_ids: Iterable[str]) -> list[str]:
        """Those of ``instance_ids`` neither stored nor scheduled (claims this scheme never saw)."""
        ids = list(dict.fromkeys(instance_ids))
        seen: set[str] = set()
        with self.engine.connect() as conn:
            for part in chunked(ids, IN_CHUNK):
                seen.update(conn.execute(sa.select(read_schedule.c.instance_id).where(
                    read_schedule.c.scheme_id == self.scheme_id, read_schedule.c.instance_id.in_(part))).scalars())
                seen.update(conn.execute(sa.select(instances.c.instance_id).where(
                    instances.c.scheme_id == self.scheme_id, instances.c.instance_id.in_(part))).scalars())
        return [i for i in ids if i not in seen]

    def due(self, now: datetime) -> list[DueRead]:
        """Claims whose read is due at ``now``, most valuable first: never read (new approvals), then by
        growing interval (a claim running for days is read last)."""
        query = (sa.select(read_schedule.c.instance_id, read_schedule.c.reads, read_schedule.c.interval_s,
                           read_schedule.c.listed_at)
                 .where(read_schedule.c.scheme_id == self.scheme_id, read_schedule.c.next_read_at <= _utc(now))
                 .order_by(sa.case((read_schedule.c.reads == 0, 0), else_=1), read_schedule.c.interval_s,
                           read_schedule.c.next_read_at, read_schedule.c.instance_id))
        with self.engine.connect() as conn:
            return [DueRead(r.instance_id, r.reads, timedelta(seconds=r.interval_s), _aware(r.listed_at))
                    for r in conn.execute(query)]

    def record_reads(self, finished: Mapping[str, bool], now: datetime, cap: timedelta,
                     first_interval: timedelta = timedelta(hours=1)) -> None:
        """After reading: a final claim leaves the schedule; one still running waits twice as long as
        last time (at most ``cap``), or ``first_interval`` if it had no schedule yet (read by name)."""
        done = [i for i, final in finished.items() if final]
        running = [i for i, final in finished.items() if not final]
        cap_s = int(cap.total_seconds())
        now = _utc(now)
        with self.engine.begin() as conn:
            for part in chunked(done, IN_CHUNK):
                conn.execute(read_schedule.delete().where(read_schedule.c.scheme_id == self.scheme_id,
                                                          read_schedule.c.instance_id.in_(part)))
            for part in chunked(running, IN_CHUNK):
                where = (read_schedule.c.scheme_id == self.scheme_id, read_schedule.c.instance_id.in_(part))
                rows = conn.execute(sa.select(read_schedule.c.instance_id, read_schedule.c.interval_s,
                                              read_schedule.c.reads).where(*where)).all()
                for row in rows:
                    interval = min(cap_s, row.interval_s * 2) if row.reads else min(cap_s, row.interval_s)
                    conn.execute(read_schedule.update().where(
                        read_schedule.c.scheme_id == self.scheme_id, read_schedule.c.instance_id == row.instance_id,
                    ).values(interval_s=interval, reads=row.reads + 1,
                             next_read_at=now + timedelta(seconds=interval)))
                missing = set(part) - {r.instance_id for r in rows}
                _insert_rows(conn, read_schedule, [
                    {"scheme_id": self.scheme_id, "instance_id": i, "next_read_at": now + first_interval,
                     "interval_s": int(first_interval.total_seconds()), "reads": 1, "listed_at": now}
                    for i in missing], ("scheme_id", "instance_id"))

    def postpone(self, instance_ids: Iterable[str], until: datetime) -> None:
        """Keep these claims due no earlier than ``until`` (a claim DingTalk refused to show)."""
        with self.engine.begin() as conn:
            for part in chunked(list(instance_ids), IN_CHUNK):
                conn.execute(read_schedule.update().where(
                    read_schedule.c.scheme_id == self.scheme_id, read_schedule.c.instance_id.in_(part))
                    .values(next_read_at=_utc(until)))

    def close(self, instance_ids: Iterable[str], now: datetime) -> int:
        """Claims a terminate/delete event named: never read again, but kept known (a listing or sweep
        finding them again does not schedule them); rows closed more than ``CLOSED_KEPT`` ago go.
        Returns how many rows were added."""
        ids = list(dict.fromkeys(instance_ids))
        self.postpone(ids, NEVER)
        added = self._schedule(ids, NEVER, timedelta(0), now)
        with self.engine.begin() as conn:
            conn.execute(read_schedule.delete().where(
                read_schedule.c.scheme_id == self.scheme_id, read_schedule.c.next_read_at == NEVER,
                read_schedule.c.listed_at < _utc(now) - CLOSED_KEPT))
        return added

    def scheduled_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(read_schedule)
                                    .where(read_schedule.c.scheme_id == self.scheme_id)).scalar() or 0)


def _aware(moment: datetime) -> datetime:
    """SQLite gives naive datetimes back; they were stored as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    """Stored and compared in UTC: SQLite keeps a datetime's wall time and drops its offset."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} is naive: staging times carry their offset")
    return moment.astimezone(UTC)
