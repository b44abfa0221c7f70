"""The claims an event-triggered run syncs: the payloads of its approval events, made into a plan.

Each payload is one DingTalk ``bpms_instance_change`` event as the approval event trigger yields it
(``instance_id``, ``type``, ``result``, ``process_code`` ...). A ``finish`` event's claim is read: the
event's result is only a hint, the detail answer decides whether it is payable. A ``terminate``
(withdrawn) or ``delete`` event's claim can never become payable, so it is not read at all: it only
leaves the read schedule (docs/schemes.md, "events").

Airflow 3.3.2 can leave an asset event out of every run (one recorded while the scheduler creates the
run for the event before), so each run of an event scheme also takes the scheme's asset events of the
last ``events.catch_up_hours``: ``caught_up`` merges their claims with the run's own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Event types after which nothing about the claim can become payable.
CLOSING_TYPES = frozenset({"terminate", "delete"})


@dataclass(frozen=True)
class EventClaims:
    """``events``: payloads of this scheme received; ``to_read``: claims to read (order of first event);
    ``withdrawn``: claims only terminate/delete events named."""

    events: int
    to_read: tuple[str, ...]
    withdrawn: tuple[str, ...]


def claims_of_events(payloads: Iterable[object], process_code: str) -> EventClaims:
    """Duplicates collapse to one claim; events of another process code, and payloads that are not an
    event (no instance id), are left out with a log line. A claim with a ``finish`` event among its
    events is read, whatever else was said about it."""
    kinds: dict[str, set[str]] = {}
    events = 0
    for payload in payloads:
        if not isinstance(payload, Mapping) or not str(payload.get("instance_id") or "").strip():
            log.warning("plan: an approval event without an instance id is left out: %r", payload)
            continue
        code = payload.get("process_code")
        if code is not None and str(code) != process_code:
            log.info("plan: an event of process %s is not this scheme's (%s): left out", code, process_code)
            continue
        events += 1
        kinds.setdefault(str(payload["instance_id"]).strip(), set()).add(str(payload.get("type") or ""))
    to_read = tuple(i for i, types in kinds.items() if not types <= CLOSING_TYPES)
    withdrawn = tuple(i for i, types in kinds.items() if types <= CLOSING_TYPES)
    return EventClaims(events, to_read, withdrawn)


@dataclass(frozen=True)
class CaughtUp:
    """A run's claims with those of the recent asset events merged in: ``to_read`` / ``withdrawn`` all
    of them, ``caught_up`` / ``caught_up_withdrawn`` the ones the run's own events do not name."""

    to_read: tuple[str, ...]
    withdrawn: tuple[str, ...]
    caught_up: tuple[str, ...]
    caught_up_withdrawn: tuple[str, ...]


def caught_up(own: EventClaims, recent: EventClaims) -> CaughtUp:
    """The run's own claims and the recent events' claims as one set, duplicates collapsed: a claim a
    finish event names (own or recent) is read, whatever else was said about it."""
    to_read = tuple(dict.fromkeys((*own.to_read, *recent.to_read)))
    withdrawn = tuple(i for i in dict.fromkeys((*own.withdrawn, *recent.withdrawn)) if i not in to_read)
    own_named = {*own.to_read, *own.withdrawn}
    return CaughtUp(to_read, withdrawn, tuple(i for i in recent.to_read if i not in own.to_read),
                    tuple(i for i in recent.withdrawn if i not in own_named and i in withdrawn))
