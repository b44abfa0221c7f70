"""Detail answers on their way to staging, and reading a list of claims that may hold unreadable ones."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dingtalk_kingdee.errors import DingTalkError, DingTalkQuotaExhausted
from dingtalk_kingdee.pipeline.protocols import DingTalkClient
from dingtalk_kingdee.staging import SchemeStaging
from dingtalk_kingdee.transform.limits import shorten

log = logging.getLogger(__name__)

# Detail answers committed per transaction: a failure part-way keeps what was already read.
FETCH_CHUNK = 200


class Answers:
    """Buffers detail answers and stores them ``FETCH_CHUNK`` at a time; counts what it stored."""

    def __init__(self, staged: SchemeStaging, run_id: str) -> None:
        self.staged = staged
        self.run_id = run_id
        self.buffer: dict[str, dict] = {}
        self.fetched = 0
        self.changed = 0
        self.unreadable: dict[str, str] = {}
        self.unstorable: list[str] = []   # escaped, shortened instance ids holding a NUL
        self.stored_ids: list[str] = []

    def add(self, instance_id: str, answer: dict) -> None:
        if "\x00" in instance_id:
            self._unstorable(instance_id, answer)
            return
        self.buffer[instance_id] = answer
        if len(self.buffer) >= FETCH_CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        self.changed += self.staged.store_answers(self.buffer, self.run_id)
        self.fetched += len(self.buffer)
        self.stored_ids.extend(self.buffer)
        self.buffer.clear()
        log.info("extract: %d details fetched (%d new or changed)", self.fetched, self.changed)

    def _unstorable(self, instance_id: str, answer: dict) -> None:
        self.fetched += 1
        self.unstorable_id(instance_id, answer.get("business_id") if isinstance(answer, dict) else None)

    def unstorable_id(self, instance_id: str, business_id: object = None) -> None:
        """An instance id holding a NUL: staging cannot key it (PostgreSQL text refuses NUL, and escaped
        it would be another id), so the claim is never paid. Counted and reported as needing a person,
        never dropped silently; named escaped and shortened."""
        escaped = shorten(_escaped(instance_id))
        self.unstorable.append(escaped)
        log.warning("extract: claim %s (business id %s) has a NUL in its instance id: staging cannot hold it, "
                    "it is not paid and is reported for a person", escaped,
                    "not read" if business_id is None else shorten(_escaped(str(business_id))))

    def refused(self, instance_id: str, error: Exception) -> None:
        self.unreadable[instance_id] = str(error)
        log.warning("extract: claim %s cannot be read: %s", instance_id, error)

    def describe(self) -> str:
        text = f"{self.fetched} details fetched ({self.changed} new or changed)"
        if self.unreadable:
            text += f", {len(self.unreadable)} unreadable: {sorted(self.unreadable)[:10]}"
        if self.unstorable:
            text += f", {len(self.unstorable)} unstorable (NUL in the instance id): {sorted(self.unstorable)[:10]}"
        return text

    def counts(self) -> dict:
        return {"fetched": self.fetched, "changed": self.changed, "unreadable": sorted(self.unreadable)[:50],
                "unstorable": sorted(set(self.unstorable))[:50]}


def _escaped(text: str) -> str:
    """Control characters (NUL first) as Python escapes, readable in a log line or a report."""
    return text.encode("unicode_escape").decode("ascii")


def read_claims(dingtalk: DingTalkClient, ids: Sequence[str], answers: Answers) -> None:
    """Read ``ids`` concurrently (within the app's QPS); when DingTalk refuses one (a deleted claim,
    say), read the rest one at a time so that one never holds up the others. A spent quota
    (``DingTalkQuotaExhausted``) is not a refusal of one claim: it propagates."""
    done: set[str] = set()
    try:
        for instance_id, answer in dingtalk.get_instances(ids):
            done.add(instance_id)
            answers.add(instance_id, answer)
        return
    except DingTalkQuotaExhausted:
        raise
    except DingTalkError as exc:
        log.warning("extract: a claim could not be read (%s); reading the rest one at a time", exc)
    for instance_id in ids:
        if instance_id in done:
            continue
        try:
            answers.add(instance_id, dingtalk.get_instance(instance_id))
        except DingTalkQuotaExhausted:
            raise
        except DingTalkError as exc:
            answers.refused(instance_id, exc)
