"""What DingTalk Stream mode puts on the wire: the ``bpms_instance_change`` event body made from a
stored instance, the EVENT and SYSTEM frames around it, and the reading of a client's ack.

Shapes follow /work/shared/reference/dingtalk-stream-events.md and the official SDK
(``dingtalk_stream/frames.py``, which reads ``time`` and ``eventBornTime`` with ``int()``, so
strings and numbers both pass). UNVERIFIED: header values are sent as strings and an EVENT frame's
``topic`` is ``"*"``; the real service's values are not documented.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from dk_emulators.dingtalk.wire import china_time_to_ms

EVENT_TYPE_APPROVAL = "bpms_instance_change"
EVENT_TOPIC = "*"
TOPIC_PING = "ping"
TOPIC_DISCONNECT = "disconnect"
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"

# Stored status -> the event's type. TERMINATED (withdrawn by the originator) and CANCELED both
# end the instance without an approver's decision (UNVERIFIED for CANCELED).
STATUS_EVENT_TYPES = {"COMPLETED": "finish", "TERMINATED": "terminate", "CANCELED": "terminate"}


def new_message_id() -> str:
    return uuid.uuid4().hex


def event_type_for(status: object) -> str | None:
    """The event an instance reaching ``status`` announces; None for a state that is no end (or a
    value that is no status at all: hostile test data stores numbers and nulls there too)."""
    return STATUS_EVENT_TYPES.get(status.upper()) if isinstance(status, str) else None


def approval_event_body(instance: dict, event_type: str) -> dict[str, Any]:
    """The ``data`` of a ``bpms_instance_change`` event for a stored instance.

    ``staffId``: the approver who decided (``finish``), else the originator. ``result`` only on
    ``finish``; ``finishTime`` once the instance ended. Times are epoch milliseconds.
    """
    instance_id = instance["process_instance_id"]
    body: dict[str, Any] = {
        "processInstanceId": instance_id,
        "processCode": instance["process_code"],
        "bizCategoryId": "",
        "businessId": instance.get("business_id", ""),
        "type": event_type,
        "title": instance.get("title", ""),
        "staffId": instance.get("originator_userid", ""),
        "createTime": _epoch_ms(instance.get("create_time")),
        "businessType": "",
        "url": f"https://aflow.dingtalk.com/dingtalk/mobile/homepage.htm?procInstId={instance_id}",
    }
    if event_type == "finish":
        body["result"] = instance.get("result", "")
        records = instance.get("operation_records")
        deciders = [r["userid"] for r in (records if isinstance(records, list) else [])
                    if isinstance(r, dict) and r.get("operation_type") == "EXECUTE_TASK_NORMAL" and r.get("userid")]
        if deciders:
            body["staffId"] = deciders[-1]
    if event_type in ("finish", "terminate") and instance.get("finish_time"):
        body["finishTime"] = _epoch_ms(instance["finish_time"])
    return body


def _epoch_ms(china_time: object) -> int | None:
    """A stored China time as epoch milliseconds; None when the stored value is no such time (the
    hostile corpus stores malformed times: the event still goes out, as DingTalk's would)."""
    try:
        return china_time_to_ms(china_time)  # type: ignore[arg-type]
    except (AttributeError, TypeError, ValueError):
        return None


def event_frame(headers: dict[str, str], data: str, connection_id: str, now_ms: int) -> dict[str, Any]:
    """An EVENT frame: the event's own headers plus the connection and the sending time."""
    return {"specVersion": SPEC_VERSION, "type": "EVENT",
            "headers": {**headers, "connectionId": connection_id, "time": str(now_ms)}, "data": data}


def system_frame(topic: str, connection_id: str, app_id: str, now_ms: int, data: dict[str, Any]) -> dict[str, Any]:
    """A SYSTEM frame (``ping`` or ``disconnect``)."""
    return {"specVersion": SPEC_VERSION, "type": "SYSTEM",
            "headers": {"appId": app_id, "connectionId": connection_id, "contentType": CONTENT_TYPE,
                        "messageId": new_message_id(), "time": str(now_ms), "topic": topic},
            "data": json.dumps(data)}


@dataclass(frozen=True)
class Ack:
    """A client's answer to a frame: ``code`` 200 = done, anything else = deliver again."""

    message_id: str
    code: int
    message: str
    data: str


def parse_ack(text: str) -> Ack | None:
    """The ack a client sent, or None when the text is not one (no code or no messageId)."""
    try:
        frame = json.loads(text)
        message_id = frame["headers"]["messageId"]
        code = int(frame["code"])
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(message_id, str) or not message_id:
        return None
    return Ack(message_id=message_id, code=code, message=str(frame.get("message", "")),
               data=frame.get("data") if isinstance(frame.get("data"), str) else json.dumps(frame.get("data")))


def subscribes_to_events(subscriptions: list[dict[str, Any]], event_type: str) -> bool:
    """True when a connection's subscriptions take EVENT frames of ``event_type`` (topic ``*`` or itself)."""
    return any(isinstance(s, dict) and s.get("type") == "EVENT" and s.get("topic") in (EVENT_TOPIC, event_type)
               for s in subscriptions)
