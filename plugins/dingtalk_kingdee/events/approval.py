"""Which Stream events concern a scheme, and what of them a run needs: pure, no I/O.

A scheme watches the ``bpms_instance_change`` events of its own approval template (``processCode``)
that settle an instance: ``finish`` (agreed or refused), ``terminate`` (withdrawn) and ``delete``.
Everything else the app receives (other templates, ``start``, other event types) is no business
of the scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dingtalk_kingdee.hooks.dingtalk_stream_frames import StreamEvent, epoch_ms

APPROVAL_EVENT_TYPE = "bpms_instance_change"
SETTLING_TYPES = ("finish", "terminate", "delete")


@dataclass(frozen=True)
class Verdict:
    """What a scheme does with one event: ``payload`` to fire, else ``skip`` (not its business) or
    ``malformed`` (its business maybe, but unreadable). ``reason`` says why, for the log."""

    payload: dict[str, Any] | None = None
    malformed: bool = False
    reason: str = ""


def approval_verdict(event: StreamEvent, process_code: str) -> Verdict:
    """The verdict on ``event`` for the scheme of template ``process_code``."""
    if event.event_type != APPROVAL_EVENT_TYPE:
        return Verdict(reason=f"event type {event.event_type!r}")
    if event.malformed is not None:
        return Verdict(malformed=True, reason=event.malformed)
    body = event.body
    if body.get("processCode") != process_code:
        return Verdict(reason=f"template {body.get('processCode')!r}")
    change = body.get("type")
    if change not in SETTLING_TYPES:
        return Verdict(reason=f"change type {change!r}")
    instance_id = body.get("processInstanceId")
    if not isinstance(instance_id, str) or not instance_id:
        return Verdict(malformed=True, reason=f"{change} event of template {process_code} without processInstanceId")
    return Verdict(payload={
        "instance_id": instance_id,
        "business_id": str(body.get("businessId") or ""),
        "type": change,
        "result": str(body["result"]) if body.get("result") else None,
        "event_id": event.event_id,
        "process_code": process_code,
        "finish_time": epoch_ms(body.get("finishTime")),
    })

