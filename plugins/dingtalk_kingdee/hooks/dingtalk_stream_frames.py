"""The frames of DingTalk's Stream mode, read and written without any I/O.

Server → client: ``{"specVersion": "1.0", "type": "SYSTEM" | "EVENT" | "CALLBACK", "headers": {...},
"data": "<JSON string>"}``. Client → server, the ack: ``{"code": 200, "headers": {"contentType":
"application/json", "messageId": <same>}, "message": "OK", "data": "<JSON string>"}``; anything but a
200 ack makes DingTalk deliver the message again, with the same ``messageId``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FRAME_SYSTEM = "SYSTEM"
FRAME_EVENT = "EVENT"
FRAME_CALLBACK = "CALLBACK"
TOPIC_PING = "ping"
TOPIC_DISCONNECT = "disconnect"
ACK_OK = 200
ACK_NOT_IMPLEMENTED = 404


class StreamFrameError(ValueError):
    """A frame that is not the JSON object Stream mode promises (it cannot even be acked)."""


@dataclass(frozen=True)
class SystemFrame:
    """A ``SYSTEM`` frame: ``ping`` (answer with an ack carrying the same data) or ``disconnect``
    (the server is about to close the socket: connect again)."""

    topic: str
    message_id: str
    data: str


@dataclass(frozen=True)
class StreamEvent:
    """One business event of an ``EVENT`` frame. ``body`` is the decoded ``data``; when ``data`` is
    not a JSON object, ``body`` is empty and ``malformed`` says why (the event still has to be
    answered, by its ``message_id``)."""

    message_id: str
    event_id: str
    event_type: str
    born_time: int | None  # epoch milliseconds (header eventBornTime)
    topic: str
    body: dict[str, Any] = field(default_factory=dict)
    malformed: str | None = None


@dataclass(frozen=True)
class OtherFrame:
    """A frame of a type this client does not subscribe to (``CALLBACK``, or a future type)."""

    frame_type: str
    topic: str
    message_id: str


Frame = SystemFrame | StreamEvent | OtherFrame


def parse_frame(text: str | bytes) -> Frame:
    """The frame ``text`` holds; ``StreamFrameError`` when it is not a frame at all."""
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise StreamFrameError(f"Stream frame is not JSON: {exc}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("headers"), dict):
        raise StreamFrameError("Stream frame is not an object with headers")
    headers: dict[str, Any] = frame["headers"]
    frame_type = str(frame.get("type") or "")
    topic = str(headers.get("topic") or "")
    message_id = str(headers.get("messageId") or "")
    if not message_id:
        raise StreamFrameError(f"Stream {frame_type or 'untyped'} frame (topic {topic!r}) has no messageId")
    data = frame.get("data")
    if frame_type == FRAME_SYSTEM:
        return SystemFrame(topic=topic, message_id=message_id, data=data if isinstance(data, str) else "")
    if frame_type != FRAME_EVENT:
        return OtherFrame(frame_type=frame_type, topic=topic, message_id=message_id)
    body, malformed = _event_body(data)
    return StreamEvent(
        message_id=message_id,
        event_id=str(headers.get("eventId") or ""),
        event_type=str(headers.get("eventType") or ""),
        born_time=epoch_ms(headers.get("eventBornTime")),
        topic=topic,
        body=body,
        malformed=malformed,
    )


def _event_body(data: Any) -> tuple[dict[str, Any], str | None]:
    if not isinstance(data, str):
        return {}, f"event data is {type(data).__name__}, not a JSON string"
    try:
        body = json.loads(data)
    except ValueError as exc:
        return {}, f"event data is not JSON: {exc}"
    if not isinstance(body, dict):
        return {}, f"event data is a JSON {type(body).__name__}, not an object"
    return body, None


def epoch_ms(value: Any) -> int | None:
    """An epoch-milliseconds field as int; None when absent or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def ack_frame(message_id: str, data: str | None = None, *, code: int = ACK_OK, message: str = "OK") -> str:
    """The ack of ``message_id`` as text. A ping's ack carries the ping's own ``data``; an event's
    ack (``data`` None) says the event was taken."""
    if data is None:
        data = json.dumps({"status": "SUCCESS" if code == ACK_OK else "LATER", "message": message})
    return json.dumps({
        "code": code,
        "headers": {"contentType": "application/json", "messageId": message_id},
        "message": message,
        "data": data,
    })
