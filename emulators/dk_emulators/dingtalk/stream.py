"""DingTalk Stream mode: connection tickets, open WebSockets, and the delivery of approval events
with acks and redelivery.

Events are born from any thread (an admin call, a test, a late-approval thread); one dispatcher
task on the server's event loop does everything that touches a socket: it sends the pings, hands
each pending event to one open connection of its app (round-robin), hands it again with the same
messageId when no 200 ack came within ``redelivery_seconds``, and drops events older than
``retention_seconds`` on the emulator's clock, counting them lost. Each connection has a writer
task that drains its outbox, so a slow client never blocks the dispatcher.

Redelivery and pings run on real time (a socket lives in real time); born, sent and retention
times are the emulator's clock. See docs/emulators-dingtalk.md ("Stream mode").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dk_emulators.dingtalk.stream_frames import (
    CONTENT_TYPE,
    EVENT_TOPIC,
    EVENT_TYPE_APPROVAL,
    TOPIC_DISCONNECT,
    TOPIC_PING,
    Ack,
    approval_event_body,
    event_frame,
    new_message_id,
    parse_ack,
    subscribes_to_events,
    system_frame,
)
from dk_emulators.faults import Fault, FaultBoard

DEFAULT_PING_SECONDS = 30.0  # UNVERIFIED: how often the real service pings
DEFAULT_REDELIVERY_SECONDS = 10.0  # UNVERIFIED: how soon the real service delivers an unacked event again
DEFAULT_RETENTION_SECONDS = 24 * 3600.0  # UNVERIFIED: how long the real service keeps trying
DISCONNECT_GRACE_SECONDS = 1.0  # after a disconnect frame, the socket is closed by then at the latest
TICK_SECONDS = 0.05  # how often the dispatcher looks for due work when nothing woke it
ACK_LOG_SIZE = 1000
# /_emulator/config names -> StreamHub attributes (settings that may change on a running emulator).
STREAM_SETTINGS = {"stream_ping_seconds": "ping_seconds", "stream_redelivery_seconds": "redelivery_seconds",
                   "stream_retention_seconds": "retention_seconds"}
CORP_ID = "ding-emulator-corp"

# Stream faults: kind -> (the call it acts on, what it does). "open" is the open call, "deliver"
# one delivery of an event to a socket. Each fault's ``after`` lets that many calls pass first.
FAULT_CALLS = {"refuse_open": "open", "drop_socket": "deliver", "duplicate": "deliver", "delay": "deliver"}
FAULT_KINDS = {
    "refuse_open": "the open call answers HTTP `status` (default 403) with {code, message}",
    "drop_socket": "instead of delivering an event, close the TCP connection without a disconnect frame "
                   "(the event goes to the next connection)",
    "duplicate": "deliver an event twice in a row, with one messageId",
    "delay": "hold an event's delivery `seconds` (default 5) before it is sent",
}
FAULT_PARAMS = {"refuse_open": {"status": 403}, "delay": {"seconds": 5.0}}
REFUSAL_CODES = {403: "Forbidden.AccessDenied", 429: "Throttling", 500: "InternalError", 503: "ServiceUnavailable"}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _derived_id(prefix: str, app_key: str) -> str:
    """A stable id for an app (its appId, its unified app id): the same on every run."""
    return f"{prefix}{hashlib.sha1(app_key.encode()).hexdigest()[:16]}"


@dataclass
class Ticket:
    app_key: str
    subscriptions: list[dict[str, Any]]
    ua: str
    local_ip: str


@dataclass
class StreamEvent:
    """One event of one app, kept until a 200 ack or until retention ends."""

    message_id: str
    app_key: str
    event_type: str
    headers: dict[str, str]
    data: str
    born: datetime
    attempts: int = 0
    due: float = 0.0  # time.monotonic() of the next delivery attempt


@dataclass
class StreamConnection:
    connection_id: str
    ticket: Ticket
    outbox: asyncio.Queue
    abort: Callable[[], None]
    opened_at: str
    last_ping: float  # time.monotonic() of the last ping (or of the opening): a live interval change applies at once
    closing: str | None = None  # "disconnect" or "abort", asked from any thread
    system_frames: dict[str, str] = field(default_factory=dict)  # messageId -> topic, until acked
    events_sent: int = 0


class StreamHub:
    """Stream mode of one emulator: ``apps`` (key -> secret) may connect; ``clock`` is the
    emulator's clock."""

    def __init__(self, apps: Mapping[str, str], clock: Callable[[], datetime], *,
                 ping_seconds: float = DEFAULT_PING_SECONDS,
                 redelivery_seconds: float = DEFAULT_REDELIVERY_SECONDS,
                 retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> None:
        self.apps = apps
        self.clock = clock
        self.ping_seconds = ping_seconds
        self.redelivery_seconds = redelivery_seconds
        self.retention_seconds = retention_seconds
        self.counts: Counter[str] = Counter()
        self.acks: deque[dict[str, Any]] = deque(maxlen=ACK_LOG_SIZE)
        self._tickets: dict[str, Ticket] = {}
        self._connections: dict[str, StreamConnection] = {}
        self._pending: dict[str, StreamEvent] = {}
        self._round_robin: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task | None = None
        self.faults = FaultBoard(FAULT_KINDS, targets=tuple(set(FAULT_CALLS.values())), kind_params=FAULT_PARAMS)

    # ------------------------------------------------------------------ faults
    def inject(self, fault: str, times: int | None = 1, rate: float | None = None, after: int = 0,
               **params: Any) -> Fault:
        """Arm a Stream fault (see ``FAULT_KINDS``) for the next ``times`` calls it acts on."""
        if fault not in FAULT_CALLS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULT_KINDS))}")
        return self.faults.arm(fault, FAULT_CALLS[fault], times, rate, after=after, **params)

    def open_refusal(self) -> tuple[int, str] | None:
        """(HTTP status, code) when an armed fault refuses this open call; None to go on."""
        fault = self.faults.take_first("open")
        if fault is None:
            return None
        status = int(fault.params["status"])
        with self._lock:
            self.counts["refused_opens"] += 1
        return status, REFUSAL_CODES.get(status, "Error")

    # ------------------------------------------------------------------ connecting
    def credentials_ok(self, client_id: Any, client_secret: Any) -> bool:
        return isinstance(client_id, str) and self.apps.get(client_id) == client_secret

    def issue_ticket(self, app_key: str, subscriptions: list[dict[str, Any]], ua: str, local_ip: str) -> str:
        """A ticket that opens one WebSocket for ``app_key`` (single use)."""
        ticket = uuid.uuid4().hex
        with self._lock:
            self._tickets[ticket] = Ticket(app_key, list(subscriptions), ua, local_ip)
            self.counts["tickets"] += 1
        return ticket

    def redeem(self, ticket: str | None) -> Ticket | None:
        """The ticket's grant, consumed; None when unknown or already used."""
        with self._lock:
            return self._tickets.pop(ticket, None) if ticket else None

    def attach(self, ticket: Ticket, abort: Callable[[], None]) -> StreamConnection:
        """Register an accepted WebSocket (called on the server's loop)."""
        self._ensure_dispatcher()
        connection = StreamConnection(
            connection_id=uuid.uuid4().hex, ticket=ticket, outbox=asyncio.Queue(), abort=abort,
            opened_at=self.clock().isoformat(), last_ping=time.monotonic())
        with self._lock:
            self._connections[connection.connection_id] = connection
            self.counts["connections_opened"] += 1
        self._nudge()
        return connection

    def detach(self, connection: StreamConnection) -> None:
        with self._lock:
            self._connections.pop(connection.connection_id, None)

    def received(self, connection: StreamConnection, text: str) -> None:
        """A text frame from the client: an ack of an event, of a ping, or something else."""
        ack = parse_ack(text)
        with self._lock:
            if ack is None:
                self.counts["unreadable_frames"] += 1
                return
            topic = connection.system_frames.pop(ack.message_id, None)
            if topic is not None:  # the SDK answers every SYSTEM frame: ping and disconnect alike
                self.counts["pongs" if topic == TOPIC_PING else "disconnect_acks"] += 1
                return
            event = self._pending.get(ack.message_id)
            self._log_ack(connection, ack, known=event is not None)
            if event is None:
                self.counts["acks_of_settled_events"] += 1
            elif ack.code == 200:
                del self._pending[ack.message_id]
                self.counts["acked"] += 1
            else:
                self.counts["nacked"] += 1

    def _log_ack(self, connection: StreamConnection, ack: Ack, known: bool) -> None:
        self.acks.append({"message_id": ack.message_id, "code": ack.code, "message": ack.message,
                          "connection_id": connection.connection_id, "ua": connection.ticket.ua,
                          "pending": known})

    # ------------------------------------------------------------------ events
    def instance_changed(self, instance: dict, event_type: str) -> None:
        """An instance started or ended: one ``bpms_instance_change`` event per app."""
        self.publish(EVENT_TYPE_APPROVAL, approval_event_body(instance, event_type))

    def publish(self, event_type: str, body: dict[str, Any]) -> list[str]:
        """Birth an event for every app of the emulator; returns their messageIds."""
        born = self.clock()
        data = json.dumps(body, ensure_ascii=False)
        ids = []
        with self._lock:
            for app_key in self.apps:
                message_id = new_message_id()
                headers = {"appId": _derived_id("app-", app_key), "contentType": CONTENT_TYPE,
                           "messageId": message_id, "topic": EVENT_TOPIC, "eventId": uuid.uuid4().hex,
                           "eventBornTime": str(_ms(born)), "eventCorpId": CORP_ID, "eventType": event_type,
                           "eventUnifiedAppId": _derived_id("unified-", app_key)}
                self._pending[message_id] = StreamEvent(message_id, app_key, event_type, headers, data, born)
                self.counts["born"] += 1
                ids.append(message_id)
        self._nudge()
        return ids

    # ------------------------------------------------------------------ admin
    def disconnect_all(self) -> int:
        """Send ``disconnect`` to every open connection, then close it; returns how many."""
        return self._close_all("disconnect")

    def drop_all(self) -> int:
        """Close every open connection's TCP connection without a word; returns how many."""
        return self._close_all("abort")

    def _close_all(self, how: str) -> int:
        with self._lock:
            for connection in self._connections.values():
                connection.closing = connection.closing or how
            count = len(self._connections)
        self._nudge()
        return count

    def state(self) -> dict[str, Any]:
        """What ``GET /_emulator/stream`` shows."""
        with self._lock:
            self._expire()
            return {
                "open_connections": len(self._connections),
                "connections": [{"connection_id": c.connection_id, "app_key": c.ticket.app_key,
                                 "subscriptions": c.ticket.subscriptions, "ua": c.ticket.ua,
                                 "local_ip": c.ticket.local_ip, "opened_at": c.opened_at,
                                 "events_sent": c.events_sent} for c in self._connections.values()],
                **{name: self.counts[name] for name in (
                    "born", "delivered", "redelivered", "acked", "nacked", "lost", "pongs", "pings",
                    "tickets", "connections_opened", "acks_of_settled_events", "unreadable_frames",
                    "refused_opens", "dropped_sockets", "duplicated", "delayed", "disconnect_acks")},
                "pending": len(self._pending),
                "acks": list(self.acks)[-50:],
                "config": self.config(),
                "faults": [fault.as_dict() for fault in self.faults.armed],
            }

    def config(self) -> dict[str, float]:
        return {name: getattr(self, attribute) for name, attribute in STREAM_SETTINGS.items()}

    # ------------------------------------------------------------------ the dispatcher
    def _ensure_dispatcher(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._dispatcher is not None and not self._dispatcher.done():
            return
        with self._lock:
            self._loop = loop
            self._wake = asyncio.Event()
            self._connections.clear()  # any left belong to a server that stopped
        self._dispatcher = loop.create_task(self._dispatch_forever(), name="dingtalk-stream-dispatcher")

    def _nudge(self) -> None:
        """Wake the dispatcher (from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(wake.set)

    async def _dispatch_forever(self) -> None:
        assert self._wake is not None
        while True:
            self._dispatch_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=TICK_SECONDS)
            self._wake.clear()

    def _dispatch_once(self) -> None:
        now = time.monotonic()
        now_ms = _ms(self.clock())
        with self._lock:
            self._expire()
            connections = list(self._connections.values())
            for connection in connections:
                if connection.closing:
                    self._close(connection, now_ms)
                elif now >= connection.last_ping + self.ping_seconds:
                    self._ping(connection, now_ms)
                    connection.last_ping = now
            for event in list(self._pending.values()):
                if event.due > now:
                    continue
                connection = self._pick(event)
                if connection is None:
                    continue
                self._deliver(event, connection, now, now_ms)

    def _deliver(self, event: StreamEvent, connection: StreamConnection, now: float, now_ms: int) -> None:
        """Hand ``event`` to ``connection``'s outbox, as the armed delivery faults say."""
        faults = {fault.kind: fault for fault in self.faults.take("deliver")}
        if "drop_socket" in faults:  # the event was not sent: it stays due for the next connection
            connection.closing = "abort"
            self.counts["dropped_sockets"] += 1
            self._close(connection, now_ms)
            return
        event.attempts += 1
        self.counts["delivered" if event.attempts == 1 else "redelivered"] += 1
        connection.events_sent += 1
        frame = event_frame(event.headers, event.data, connection.connection_id, now_ms)
        copies = 2 if "duplicate" in faults else 1
        self.counts["duplicated"] += copies - 1
        delay = float(faults["delay"].params["seconds"]) if "delay" in faults else 0.0
        event.due = now + delay + self.redelivery_seconds
        for _ in range(copies):
            if delay:
                assert self._loop is not None
                self._loop.call_later(delay, connection.outbox.put_nowait, frame)
            else:
                connection.outbox.put_nowait(frame)
        if delay:
            self.counts["delayed"] += 1

    def _pick(self, event: StreamEvent) -> StreamConnection | None:
        """One open connection of the event's app that takes it, round-robin."""
        takers = [c for c in self._connections.values()
                  if not c.closing and c.ticket.app_key == event.app_key
                  and subscribes_to_events(c.ticket.subscriptions, event.event_type)]
        if not takers:
            return None
        turn = self._round_robin[event.app_key]
        self._round_robin[event.app_key] += 1
        return takers[turn % len(takers)]

    def _ping(self, connection: StreamConnection, now_ms: int) -> None:
        frame = system_frame(TOPIC_PING, connection.connection_id, _derived_id("app-", connection.ticket.app_key),
                             now_ms, {"opaque": uuid.uuid4().hex})
        connection.system_frames[frame["headers"]["messageId"]] = TOPIC_PING
        self.counts["pings"] += 1
        connection.outbox.put_nowait(frame)

    def _close(self, connection: StreamConnection, now_ms: int) -> None:
        del self._connections[connection.connection_id]
        if connection.closing == "disconnect":
            frame = system_frame(TOPIC_DISCONNECT, connection.connection_id,
                                 _derived_id("app-", connection.ticket.app_key), now_ms,
                                 {"reason": "the server is closing this connection"})
            connection.system_frames[frame["headers"]["messageId"]] = TOPIC_DISCONNECT
            connection.outbox.put_nowait(frame)
        connection.outbox.put_nowait(connection.closing)

    def _expire(self) -> None:
        """Drop events older than the retention on the emulator's clock: they are lost."""
        oldest = self.clock().timestamp() - self.retention_seconds
        for message_id, event in list(self._pending.items()):
            if event.born.timestamp() < oldest:
                del self._pending[message_id]
                self.counts["lost"] += 1
