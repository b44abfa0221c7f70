"""The extract of an event-triggered run: read the claims its approval events name, nothing else.

No listing: a finish event's claim is read once (unless staging already holds it final: a duplicated
or redelivered event costs no call), and its read updates the read schedule, so a claim read final
leaves it and the hourly path never reads it again. A claim named only by terminate/delete events is
not read (nothing about it can become payable): it is closed in the read schedule, known but never
due. Only a withdrawn claim staging already holds as running is read, once, so that staging shows it
final instead of running for ever.

Within the month's budget like every run: past it, the claims left unread are made due at once in the
read schedule (new approvals come first there), for the hourly runs to read when the budget allows.

The claims of the scheme's recent asset events that the run's own events do not name (``Run.caught_up_ids``:
an event no run took) cost the same: nothing when staging holds them final, one read otherwise. An
event run has them among its named claims; the hourly run reads them beside its due reads
(``event_reads.caught_up_reads``), so such a claim is billed within the hour.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from dingtalk_kingdee.pipeline.call_budget import CallBudget
from dingtalk_kingdee.pipeline.event_reads import caught_up_counts, event_reads, wait_for_budget
from dingtalk_kingdee.pipeline.extract_answers import Answers, read_claims
from dingtalk_kingdee.pipeline.extract_hourly import read_intervals, reschedule
from dingtalk_kingdee.pipeline.protocols import DingTalkClient
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import ReadSchedule

log = logging.getLogger(__name__)


def extract_events(scheme: Scheme, dingtalk: DingTalkClient, engine: Engine, run: Run, answers: Answers) -> dict:
    if run.window_end is None:
        raise ValueError("an event-triggered extract needs its time (window_end: the run's run_after)")
    now = run.window_end
    reads = event_reads(run.instance_ids or (), run.withdrawn_ids, answers)
    to_read = reads.to_read
    caught = caught_up_counts(run, reads)
    log.info("extract: %s approval events name %d claims to read (%d already final in staging, not read again) "
             "and %d withdrawn or deleted (%d of them stored as running: read once); %d of the claims to read "
             "caught up from asset events no run took", run.events, len(reads.named), len(reads.final),
             len(reads.withdrawn), len(reads.stored_running), caught["caught_up"])
    schedule = ReadSchedule(engine, scheme.id)
    first, cap = read_intervals(scheme)
    allowed = CallBudget.of(engine, scheme, run).remaining()
    waiting = to_read[allowed:]
    if waiting:
        to_read = to_read[:allowed]
        log.warning("extract: the month's DingTalk call budget (%d) allows %d of the %d reads: %d claims wait "
                    "for the hourly runs (due at once, new approvals first): %s", scheme.source.monthly_call_budget,
                    allowed, allowed + len(waiting), len(waiting), waiting[:10])
        wait_for_budget(schedule, waiting, now, first)
    try:
        read_claims(dingtalk, to_read, answers)
    finally:
        answers.flush()
        reschedule(answers, schedule, now, cap, first)
        schedule.close(reads.to_close, now)
    log.info("extract: %s", answers.describe())
    return {"events": run.events, "named": len(reads.named), "already_final": len(reads.final),
            "withdrawn": len(reads.withdrawn), "deferred_by_budget": len(waiting), **caught, **answers.counts()}
