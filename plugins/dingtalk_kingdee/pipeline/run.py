"""What one run of the sync was asked to do: the plan every step of the run works to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Operators, the schedule and DingTalk's own dates think in China time.
from dingtalk_kingdee.china_time import CHINA

# How the trigger form asks for a window time; an explicit offset (``Z``, ``+08:00``) is kept as given.
FORM_TIME_HINT = "YYYY-MM-DD HH:MM (China time)"
FORM_TIME_PATTERN = r"^$|^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"


@dataclass(frozen=True)
class Run:
    """What one DAG run (or one direct call) was asked to do.

    ``window_start``/``window_end`` bound the claims listed by start time; ``instance_ids``, when
    given, replaces the listing and limits every step to those claims. ``scheduled``: the DAG's own
    hourly run with no window asked for: with the scheme's incremental listing it lists from the
    stored watermark and reads only the claims due (``window_end`` is its "now"); any other run lists
    and reads what its window holds. ``events``: the approval events an event-triggered run received
    (None: the run was not triggered by events); it syncs the claims they name, ``instance_ids`` read
    and ``withdrawn_ids`` (named only by terminate/delete events) never read. ``caught_up_ids`` /
    ``caught_up_withdrawn_ids``: with events on, the claims of the scheme's recent asset events that
    the run's own events do not name (an event no run took); an event run has them among its
    ``instance_ids`` / ``withdrawn_ids`` too, an hourly run reads them beside its due reads. Either
    reads only those staging does not hold final. ``trigger``: the run's type as Airflow gave it
    (scheduled, manual, asset_triggered, backfill).
    """

    run_id: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    dry_run: bool = False
    instance_ids: tuple[str, ...] | None = None
    replay_rejected: bool = False
    scheduled: bool = False
    events: int | None = None
    withdrawn_ids: tuple[str, ...] = ()
    trigger: str = ""
    caught_up_ids: tuple[str, ...] = ()
    caught_up_withdrawn_ids: tuple[str, ...] = ()

    @property
    def event_triggered(self) -> bool:
        return self.events is not None

    def to_xcom(self) -> dict[str, Any]:
        """The plan as plain JSON values (times as ISO 8601 with their offset), for XCom."""
        return {
            "run_id": self.run_id,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "dry_run": self.dry_run,
            "instance_ids": list(self.instance_ids) if self.instance_ids is not None else None,
            "replay_rejected": self.replay_rejected,
            "scheduled": self.scheduled,
            "events": self.events,
            "withdrawn_ids": list(self.withdrawn_ids),
            "trigger": self.trigger,
            "caught_up_ids": list(self.caught_up_ids),
            "caught_up_withdrawn_ids": list(self.caught_up_withdrawn_ids),
        }

    def window_text(self) -> str:
        """The effective window in China time, as the run log states it."""
        if self.event_triggered:
            return (f"the claims named by {self.events} approval events: {len(self.instance_ids or ())} to read, "
                    f"{len(self.withdrawn_ids)} withdrawn or deleted{self._caught_up_text()} (no listing window)")
        if self.instance_ids is not None:
            return f"the {len(self.instance_ids)} named claims (no listing window)"
        text = (f"claims started from {china_time(self.window_start)} to {china_time(self.window_end)} "
                f"China time (Asia/Shanghai)")
        if self.scheduled:  # the extract log says what the incremental listing actually covered
            text += "; a scheduled run: with incremental listing, only from the stored watermark to its end"
        return text + self._caught_up_text()

    def _caught_up_text(self) -> str:
        if not (self.caught_up_ids or self.caught_up_withdrawn_ids):
            return ""
        return (f"; {len(self.caught_up_ids)} caught up from recent asset events (read unless staging holds them "
                f"final) and {len(self.caught_up_withdrawn_ids)} withdrawn ones")

    @classmethod
    def from_xcom(cls, plan: Mapping[str, Any]) -> Run:
        """The plan ``to_xcom`` wrote, back as a ``Run``."""
        ids = plan.get("instance_ids")
        return cls(
            run_id=str(plan["run_id"]),
            window_start=_time_or_none(plan.get("window_start")),
            window_end=_time_or_none(plan.get("window_end")),
            dry_run=bool(plan.get("dry_run")),
            instance_ids=tuple(ids) if ids is not None else None,
            replay_rejected=bool(plan.get("replay_rejected")),
            scheduled=bool(plan.get("scheduled")),
            events=None if plan.get("events") is None else int(plan["events"]),
            withdrawn_ids=tuple(plan.get("withdrawn_ids") or ()),
            trigger=str(plan.get("trigger") or ""),
            caught_up_ids=tuple(plan.get("caught_up_ids") or ()),
            caught_up_withdrawn_ids=tuple(plan.get("caught_up_withdrawn_ids") or ()),
        )


def _time_or_none(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"plan time {value!r} has no offset")
    return parsed


def china_time(value: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in China time; "-" for none."""
    return value.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def form_time(value: object, what: str) -> datetime | None:
    """A window time from the trigger form: China time unless it carries its own offset; None if blank.

    The form asks for ``YYYY-MM-DD HH:MM`` (seconds optional, a date alone is midnight); the REST API
    may send any ISO 8601 time, and one with ``Z`` or an offset means exactly that instant.
    """
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a time: use {FORM_TIME_HINT}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=CHINA)


def select_ids(values: Iterable[str] | None) -> tuple[str, ...] | None:
    """Claim ids from a trigger form: blanks dropped, order kept; none at all means "no selection"."""
    cleaned = tuple(v.strip() for v in (values or []) if v and v.strip())
    return cleaned or None
