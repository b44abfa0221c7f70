"""What the claims named by approval events cost, for the runs that read them: an event run (its own
events' claims) and an hourly run of an event scheme (the claims of the scheme's recent asset events,
``Run.caught_up_ids``, that an event no run took left unread).

A claim staging holds final costs no call: the check is two staging queries. A withdrawn or deleted
claim is closed in the read schedule, or read once if staging holds it running.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dingtalk_kingdee.pipeline.extract_answers import Answers
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.staging import ReadSchedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventReads:
    """What the claims approval events name cost: ``named`` claims are read unless staging holds them
    ``final``; ``withdrawn`` ones are closed in the read schedule, or read once if stored running."""

    named: tuple[str, ...]
    final: frozenset[str]
    withdrawn: tuple[str, ...]
    stored_running: frozenset[str]

    @property
    def to_read(self) -> list[str]:
        return [i for i in self.named if i not in self.final] + [i for i in self.withdrawn if i in self.stored_running]

    @property
    def to_close(self) -> list[str]:
        return [i for i in self.withdrawn if i not in self.stored_running]


def event_reads(named_ids: Iterable[str], withdrawn_ids: Iterable[str], answers: Answers) -> EventReads:
    """Checks the named claims against staging (two queries, no DingTalk call). An id holding a NUL can
    be neither stored nor scheduled: reported, not read."""
    named: list[str] = []
    for instance_id in named_ids:
        if "\x00" in instance_id:
            answers.unstorable_id(instance_id)
        else:
            named.append(instance_id)
    withdrawn = [i for i in withdrawn_ids if "\x00" not in i]
    return EventReads(tuple(named), frozenset(answers.staged.final_among(named)), tuple(withdrawn),
                      frozenset(answers.staged.unfinished_among(withdrawn)))


def wait_for_budget(schedule: ReadSchedule, waiting: Sequence[str], now: datetime, first: timedelta) -> None:
    """Claims past the month's budget: due at once in the read schedule, for the hourly runs."""
    schedule.postpone(waiting, now)
    schedule.schedule_new(waiting, now - first, first)


def caught_up_counts(run: Run, reads: EventReads) -> dict:
    """Of the claims caught up from recent asset events: how many are read, how many staging holds final."""
    recent = {*run.caught_up_ids, *run.caught_up_withdrawn_ids}
    return {"caught_up": sum(1 for i in reads.to_read if i in recent),
            "caught_up_final": sum(1 for i in reads.final if i in recent)}


@dataclass(frozen=True)
class CaughtUpReads:
    """The hourly run's reads of claims caught up from recent asset events: ``ids`` to read now, the
    ``reads`` they came from, ``counts`` for the step's result."""

    ids: list[str]
    reads: EventReads
    counts: dict


def caught_up_reads(run: Run, answers: Answers, schedule: ReadSchedule, reading: Sequence[str], allowed: int,
                    first: timedelta) -> CaughtUpReads:
    """For an hourly run: the caught-up claims not final in staging and not among ``reading`` (its due
    reads), within ``allowed`` reads; the others wait due at once for the next hourly run."""
    if run.window_end is None:
        raise ValueError("an hourly extract needs its time (window_end)")
    now = run.window_end
    reads = event_reads(run.caught_up_ids, run.caught_up_withdrawn_ids, answers)
    already = set(reading)
    ids = [i for i in reads.to_read if i not in already]
    waiting = ids[max(allowed, 0):]
    if waiting:
        log.warning("extract: the month's DingTalk call budget leaves %d claims of recent asset events unread: "
                    "due at once: %s", len(waiting), waiting[:10])
        wait_for_budget(schedule, waiting, now, first)
        ids = ids[:max(allowed, 0)]
    counts = {**caught_up_counts(run, reads), "caught_up": len(ids), "caught_up_deferred_by_budget": len(waiting)}
    if run.caught_up_ids or run.caught_up_withdrawn_ids:
        log.info("extract: %d claims caught up from asset events no run took (%d of the recent events' claims "
                 "already final in staging: no call; %d withdrawn or deleted)", len(ids), counts["caught_up_final"],
                 len(reads.to_close))
    return CaughtUpReads(ids, reads, counts)
