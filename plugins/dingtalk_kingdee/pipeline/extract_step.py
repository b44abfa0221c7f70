"""extract: list the claims of the run's window and store fresh answers for those not yet final."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from sqlalchemy.engine import Engine

from dingtalk_kingdee.errors import DingTalkError, DingTalkUnavailable
from dingtalk_kingdee.pipeline.protocols import DingTalkClient
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import SchemeStaging

log = logging.getLogger(__name__)

# Detail answers committed per transaction: a failure part-way keeps what was already read.
FETCH_CHUNK = 200
# Listed ids checked against staging per query, so details start while later pages are listed.
LIST_BATCH = 40


def extract(scheme: Scheme, dingtalk: DingTalkClient, engine: Engine, run: Run) -> dict:
    """List the claims started in the look-back window and store fresh answers for the unfinished ones.

    Listing, the staging check and the detail calls form one stream: details of the first pages are
    fetched while later pages are still being listed (two APIs, two QPS budgets).
    """
    staged = SchemeStaging(engine, scheme.id)
    if run.instance_ids:
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

    fetched = changed = 0
    buffer: dict[str, dict] = {}

    def store() -> None:
        nonlocal fetched, changed
        changed += staged.store_answers(buffer, run.run_id)
        fetched += len(buffer)
        buffer.clear()
        log.info("extract: %d listed so far, %d already final, %d details fetched (%d new or changed)",
                 len(listed), len(final), fetched, changed)

    for instance_id, answer in dingtalk.get_instances(unfinished()):
        buffer[instance_id] = answer
        if len(buffer) >= FETCH_CHUNK:
            store()
    if buffer:
        store()
    expected = len(listed) - len(final)
    if fetched != expected:
        raise DingTalkUnavailable(f"DingTalk answered {fetched} of {expected} detail calls")

    # Claims stored while running that this listing no longer covers (started before the look-back
    # window) are still read until they are final. One that DingTalk refuses to show is reported and
    # read again next run; it never holds up the others.
    stale: list[str] = []
    unreadable: dict[str, str] = {}
    if not run.instance_ids:
        listed_ids = set(listed)
        stale = [i for i in staged.unfinished_claims() if i not in listed_ids]
    for instance_id in stale:
        try:
            buffer[instance_id] = dingtalk.get_instance(instance_id)
        except DingTalkError as exc:
            unreadable[instance_id] = str(exc)
            log.warning("extract: claim %s (stored while running) cannot be read: %s", instance_id, exc)
            continue
        if len(buffer) >= FETCH_CHUNK:
            store()
    if buffer:
        store()
    log.info("extract: %d listed, %d already final, %d details fetched (%d new or changed)%s",
             len(listed), len(final), fetched, changed,
             f", {len(unreadable)} unreadable: {sorted(unreadable)[:10]}" if unreadable else "")
    return {"listed": len(listed), "already_final": len(final), "outside_window": len(stale),
            "fetched": fetched, "changed": changed, "unreadable": sorted(unreadable)[:50]}


def _with_end(ids: Iterable[str]) -> Iterator[str | None]:
    """The ids, then None: lets a batching loop flush its last batch in the same place."""
    yield from ids
    yield None
