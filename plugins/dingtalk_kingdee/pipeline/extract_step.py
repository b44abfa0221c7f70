"""extract: list the claims of the run's window and store fresh answers for those not yet final.

A scheduled run of a scheme with incremental listing goes through ``extract_hourly`` instead (list
from the watermark, read what is due), an event-triggered run through ``extract_events`` (read the
claims its approval events name). Either way every DingTalk call is written to the call ledger,
and a spent monthly quota (90020) stops the DingTalk calls of the run without failing it: what was
read is stored, and transform, load and report go on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from sqlalchemy.engine import Engine

from dingtalk_kingdee.errors import DingTalkQuotaExhausted, DingTalkUnavailable
from dingtalk_kingdee.pipeline.call_budget import StepCalls, metered, note_quota_exhausted, quota_back
from dingtalk_kingdee.pipeline.extract_answers import Answers, read_claims
from dingtalk_kingdee.pipeline.extract_events import extract_events
from dingtalk_kingdee.pipeline.extract_hourly import extract_hourly
from dingtalk_kingdee.pipeline.protocols import DingTalkClient
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import SchemeStaging

log = logging.getLogger(__name__)

# Listed ids checked against staging per query, so details start while later pages are listed.
LIST_BATCH = 40


def extract(scheme: Scheme, dingtalk: DingTalkClient, engine: Engine, run: Run) -> dict:
    """Store fresh DingTalk answers for the run's claims; returns counts, ``dingtalk_calls`` among them."""
    calls = StepCalls(engine, scheme, run, "extract", dingtalk)
    answers = Answers(SchemeStaging(engine, scheme.id), run.run_id)
    counts: dict = {}
    try:
        if run.event_triggered:
            counts = extract_events(scheme, dingtalk, engine, run, answers)
        elif run.scheduled and not run.instance_ids and scheme.source.listing == "incremental":
            counts = extract_hourly(scheme, dingtalk, engine, run, answers, calls)
        else:
            counts = _extract_window(scheme, dingtalk, run, answers)
    except DingTalkQuotaExhausted as exc:
        answers.flush()
        first = note_quota_exhausted(engine, scheme, run, exc)
        log.error("extract: DingTalk's monthly call quota is exhausted (errcode 90020): no more DingTalk calls "
                  "this run; %d answers read before it are kept and go on to transform and load%s",
                  answers.fetched, " (first time this month)" if first else "")
        counts = {**counts, **answers.counts(), "quota_exhausted": True}
    finally:
        made = calls.record()
    if metered(made) and not counts.get("quota_exhausted"):
        quota_back(engine, run)
    counts["dingtalk_calls"] = made
    return counts


def _extract_window(scheme: Scheme, dingtalk: DingTalkClient, run: Run, answers: Answers) -> dict:
    """List the claims started in the run's window and read the unfinished ones, then every stored claim
    still unfinished that the window does not cover. Listing, the staging check and the detail calls
    form one stream: details of the first pages are fetched while later pages are still listed."""
    staged = answers.staged
    if run.instance_ids is not None:
        source: Iterable[str] = run.instance_ids
        log.info("extract: %d claims named by the run", len(run.instance_ids))
    else:
        if run.window_end is None or run.window_start is None:
            raise ValueError("extract needs a window (start, end) or instance_ids")
        log.info("extract: listing %s claims started in [%s, %s)", scheme.source.process_code,
                 run.window_start.isoformat(), run.window_end.isoformat())
        source = dingtalk.list_instance_ids(scheme.source.process_code, run.window_start, run.window_end)
    listed: list[str] = []
    final: list[str] = []

    def unfinished() -> Iterator[str]:
        """Listed ids not yet final in staging (final claims are never fetched again)."""
        seen: set[str] = set()
        batch: list[str] = []
        for instance_id in _with_end(source):
            if instance_id is not None and instance_id not in seen:
                seen.add(instance_id)
                batch.append(instance_id)
            if batch and (instance_id is None or len(batch) >= LIST_BATCH):
                known = staged.final_among(batch)
                staged.mark_listed(known, run.run_id)
                listed.extend(batch)
                final.extend(known)
                yield from (i for i in batch if i not in known)
                batch = []

    for instance_id, answer in dingtalk.get_instances(unfinished()):
        answers.add(instance_id, answer)
    answers.flush()
    expected = len(listed) - len(final)
    if answers.fetched != expected:
        raise DingTalkUnavailable(f"DingTalk answered {answers.fetched} of {expected} detail calls")

    # Claims stored while running that this listing no longer covers (started before the look-back
    # window) are still read until they are final, concurrently like the others. One that DingTalk
    # refuses to show is reported and read again next run; it never holds up the others.
    stale: list[str] = []
    if run.instance_ids is None:
        listed_ids = set(listed)
        stale = [i for i in staged.unfinished_claims() if i not in listed_ids]
    read_claims(dingtalk, stale, answers)
    answers.flush()
    log.info("extract: %d listed, %d already final, %s", len(listed), len(final), answers.describe())
    return {"listed": len(listed), "already_final": len(final), "outside_window": len(stale), **answers.counts()}


def _with_end(ids: Iterable[str]) -> Iterator[str | None]:
    """The ids, then None: lets a batching loop flush its last batch in the same place."""
    yield from ids
    yield None
