"""The scheduled hourly extract of a scheme with incremental listing: an idle hour costs one call.

1. List the claims started since the stored watermark (minus ``listing_overlap_minutes``) up to the
   run's interval end; a run with no watermark, and the daily sweep (the first run at or after the
   scheme's ``sweep_hour``, China time, a day after the last sweep), list the whole look-back window.
   The watermark moves to the interval end only when the listing completed, so a failed or missed hour
   is listed by the next run.
2. A claim listed for the first time waits one hour before its first read (a claim started within the
   hour is nearly always still running); one found by the sweep (the hourly path missed it) is read now.
3. Claims are read when due: after each read that finds a claim still running the wait doubles
   (1 h, 2 h, 4 h ...) up to ``reread_cap_hours``; a final claim is never read again.
4. With events on (``scheme.events``) a claim's first read is its finish event (``extract_events``):
   the listing runs every ``events.listing_every_hours``, a listed claim is first read only after
   ``events.safety_reread_hours`` (a safety read, in case its event was lost), waits then double up to
   ``events.safety_reread_cap_hours``; the nightly sweep lists only the last ``events.sweep_window_days``
   (where a claim DingTalk indexed late after the listing passed it can be), and the whole look-back
   every ``events.sweep_every_days``. That sweep lists only up to the watermark (a claim it finds there
   was missed and is read now); the hours after it are left to the watermark listing.
5. Within the month's budget (``monthly_call_budget``), in this order of sacrifice: the sweep is
   skipped near the budget, then re-reads of claims waiting at the cap, then other re-reads (longest
   waits first); first reads of new claims go last. At the budget the run makes no metered call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from dingtalk_kingdee.pipeline.call_budget import CallBudget, StepCalls
from dingtalk_kingdee.pipeline.event_reads import caught_up_reads
from dingtalk_kingdee.pipeline.extract_answers import Answers, read_claims
from dingtalk_kingdee.pipeline.protocols import DingTalkClient
from dingtalk_kingdee.pipeline.run import CHINA, Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import ReadSchedule, Watermark

log = logging.getLogger(__name__)

FIRST_INTERVAL = timedelta(hours=1)
# A sweep is due once a day: at least this long after the last one.
SWEEP_GAP = timedelta(hours=20)


def read_intervals(scheme: Scheme) -> tuple[timedelta, timedelta]:
    """(wait before a listed claim's first read, longest wait between reads): with events on, the
    safety intervals (the finish event brings the claim; these reads only catch a lost event)."""
    if scheme.events.enabled:
        return (timedelta(hours=scheme.events.safety_reread_hours),
                timedelta(hours=scheme.events.safety_reread_cap_hours))
    return FIRST_INTERVAL, timedelta(hours=scheme.source.reread_cap_hours)


def sweep_due(now: datetime, mark: Watermark | None, sweep_hour: int | None, every_days: int = 1) -> bool:
    """Whether this run sweeps the whole look-back: the first run at or after ``sweep_hour`` (China
    time) of a day whose sweep has not been made (a missed night is made up at the next run), once
    every ``every_days``."""
    if sweep_hour is None or mark is None:
        return False
    local = now.astimezone(CHINA)
    last_slot = local.replace(hour=sweep_hour, minute=0, second=0, microsecond=0)
    if last_slot > local:
        last_slot -= timedelta(days=1)
    gap = SWEEP_GAP + timedelta(days=every_days - 1)
    return mark.swept_at is None or (mark.swept_at < last_slot and now - mark.swept_at >= gap)


@dataclass(frozen=True)
class Sweep:
    """A sweep this run makes: of the ``whole`` look-back, or (events on) of the recent days; it lists
    the claims started from ``start``."""

    whole: bool
    start: datetime


def sweep_of(now: datetime, mark: Watermark | None, scheme: Scheme, window_start: datetime) -> Sweep | None:
    """The sweep due at this run, if any. Without events: the whole look-back, nightly. With events: the
    whole look-back every ``events.sweep_every_days``, and on the other nights the last
    ``events.sweep_window_days`` only; the short sweep also reaches back to the watermark (less the
    overlap), so a listing that failed for longer than the window leaves no gap."""
    source, events = scheme.source, scheme.events
    if not events.enabled:
        return Sweep(True, window_start) if sweep_due(now, mark, source.sweep_hour) else None
    if sweep_due(now, mark, source.sweep_hour, events.sweep_every_days):
        return Sweep(True, window_start)
    if mark is None or not sweep_due(now, Watermark(mark.listed_until, mark.last_sweep()), source.sweep_hour):
        return None
    start = min(now - timedelta(days=events.sweep_window_days),
                mark.listed_until - timedelta(minutes=source.listing_overlap_minutes))
    return Sweep(False, max(window_start, start))


def listing_due(now: datetime, mark: Watermark | None, scheme: Scheme) -> bool:
    """Whether an hourly run lists from the watermark: always, unless events are on and the last
    listing was less than ``events.listing_every_hours`` ago."""
    if mark is None or not scheme.events.enabled:
        return True
    return now - mark.listed_until >= timedelta(hours=scheme.events.listing_every_hours)


def extract_hourly(scheme: Scheme, dingtalk: DingTalkClient, engine: Engine, run: Run, answers: Answers,
                   calls: StepCalls) -> dict:
    if run.window_end is None or run.window_start is None:
        raise ValueError("a scheduled extract needs its interval (window_start, window_end)")
    now, source = run.window_end, scheme.source
    first, cap = read_intervals(scheme)
    schedule = ReadSchedule(engine, scheme.id)
    budget = CallBudget.of(engine, scheme, run)
    mark = schedule.watermark()
    planned = sweep_of(now, mark, scheme, run.window_start)
    if planned is not None and budget.near():
        log.warning("extract: daily sweep skipped: %d of the month's %d DingTalk calls are spent",
                    budget.used_before, budget.budget)
        planned = None
    sweep = planned is not None
    start = run.window_start
    if planned is not None:
        start = planned.start
    elif mark is not None:
        start = max(run.window_start, min(mark.listed_until, now) - timedelta(minutes=source.listing_overlap_minutes))
    counts: dict = {"listing_from": start.isoformat(), "sweep": sweep,
                    "sweep_window": None if planned is None else ("whole" if planned.whole else "recent"),
                    "listed": 0, "new": 0,
                    "due": 0, "deferred_by_budget": 0, "budget_state": budget.state()}

    listing = sweep or listing_due(now, mark, scheme)
    counts["listing"] = listing
    # With events on, the sweep stops at the watermark: a claim unknown there was missed by the listing
    # and is read now; the hours after it are the watermark listing's (when due), whose new claims are
    # only not listed yet and wait for their event like any other.
    split = sweep and scheme.events.enabled and mark is not None
    swept: list[str] = []
    listed: list[str] = []
    sweep_complete = listing_complete = False
    if not listing:
        log.info("extract: no listing this hour (events on: every %d h; the last listing reached %s)",
                 scheme.events.listing_every_hours, mark.listed_until.isoformat() if mark else "-")
    elif budget.remaining() <= 0:
        log.warning("extract: the month's DingTalk call budget (%d) is spent: no DingTalk call this run",
                    budget.budget)
    elif split:
        sweep_end = min(mark.listed_until, now)
        swept, sweep_complete = list_ids(dingtalk, source.process_code, start, sweep_end,
                                         sweep_label(planned, mark, scheme), answers, budget, calls)
        if sweep_complete and listing_due(now, mark, scheme):
            from_mark = max(run.window_start, sweep_end - timedelta(minutes=source.listing_overlap_minutes))
            listed, listing_complete = list_ids(dingtalk, source.process_code, from_mark, now, "", answers,
                                                budget, calls)
    else:
        listed, listing_complete = list_ids(dingtalk, source.process_code, start, now,
                                            sweep_label(planned, mark, scheme), answers, budget, calls)
        sweep_complete = sweep and listing_complete
    missed = schedule.unknown_among(swept)
    known_missed = set(missed)
    new = [i for i in schedule.unknown_among(listed) if i not in known_missed]
    if (sweep and not split) or mark is None:
        # Claims the hourly path did not see (or a first run's history) are read now.
        schedule.schedule_new(new, now - first, first)
    else:
        schedule.schedule_new(new, now, first)
    schedule.schedule_new(missed, now - first, first)
    whole = mark is None or (planned is not None and planned.whole)
    if listing_complete:
        schedule.advance_watermark(now, run.run_id, swept=whole and not split,
                                    swept_recent=(whole or sweep) and not split)
    if split and sweep_complete:
        schedule.record_sweep(now, run.run_id, whole=whole)
    schedule.schedule_unscheduled(now, first)
    counts.update(listed=len(swept) + len(listed), new=len(new) + len(missed))
    found = missed if split else (new if sweep and mark is not None else [])
    if found:
        log.warning("extract: the daily sweep found %d claims the hourly listing missed: %s", len(found), found[:10])
        counts["found_by_sweep"] = len(found)

    due = schedule.due(now)
    if budget.near(calls.metered()):
        waiting = [d for d in due if d.reads > 0 and d.interval >= cap]
        due = [d for d in due if not (d.reads > 0 and d.interval >= cap)]
        if waiting:
            log.warning("extract: near the month's DingTalk call budget: %d re-reads of long-running claims "
                        "wait", len(waiting))
        counts["deferred_by_budget"] += len(waiting)
    allowed = budget.remaining(calls.metered())
    if len(due) > allowed:
        log.warning("extract: %d reads due, %d within the month's DingTalk call budget; the longest-running "
                    "wait", len(due), allowed)
        counts["deferred_by_budget"] += len(due) - allowed
        due = due[:allowed]
    ids = [d.instance_id for d in due]
    counts["due"] = len(ids)
    # With events on: the claims of recent asset events no run took (none are named otherwise).
    caught = caught_up_reads(run, answers, schedule, ids, budget.remaining(calls.metered()) - len(ids), first)
    ids += caught.ids
    counts.update(caught.counts)
    try:
        read_claims(dingtalk, ids, answers)
    finally:
        answers.flush()
        reschedule(answers, schedule, now, cap, first)
        schedule.close(caught.reads.to_close, now)
    log.info("extract: %d listed (%d new), %d reads due, %s", len(listed), len(new), len(ids), answers.describe())
    return {**counts, **answers.counts()}


def list_ids(dingtalk: DingTalkClient, process_code: str, start: datetime, end: datetime, label: str,
             answers: Answers, budget: CallBudget, calls: StepCalls) -> tuple[list[str], bool]:
    """The ids of the claims started in ``[start, end)`` and whether the listing completed (it stops at
    the month's budget)."""
    log.info("extract: listing %s claims started in [%s, %s)%s", process_code, start.isoformat(), end.isoformat(),
             label)
    ids: list[str] = []
    for instance_id in dingtalk.list_instance_ids(process_code, start, end):
        if "\x00" in instance_id:   # the read schedule cannot hold it: reported, not read
            answers.unstorable_id(instance_id)
            continue
        ids.append(instance_id)
        if budget.remaining(calls.metered()) <= 0:
            log.warning("extract: listing stopped at the month's DingTalk call budget (%d)", budget.budget)
            return ids, False
    return ids, True


def sweep_label(planned: Sweep | None, mark: Watermark | None, scheme: Scheme) -> str:
    """How the listing's range reads in the task log."""
    if mark is None or (planned is not None and planned.whole):
        return " (sweep of the look-back window)"
    if planned is not None:
        return f" (nightly sweep of the last {scheme.events.sweep_window_days} days)"
    return ""


def reschedule(answers: Answers, schedule: ReadSchedule, now: datetime, cap: timedelta, first: timedelta) -> None:
    """Final claims leave the schedule; the others wait longer (``first`` if they had no schedule);
    unreadable ones wait the cap."""
    stored = answers.stored_ids
    final = answers.staged.final_among(stored)
    schedule.record_reads({i: i in final for i in stored}, now, cap, first)
    if answers.unreadable:
        schedule.postpone(answers.unreadable, now + cap)
