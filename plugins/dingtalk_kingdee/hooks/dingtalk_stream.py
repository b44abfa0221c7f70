"""``DingTalkStreamClient``: DingTalk's Stream mode, the events of one app over an outbound WebSocket.

``POST {api host}/v1.0/gateway/connections/open`` with the app key and secret gives an endpoint and a
single-use ticket; the WebSocket ``{endpoint}?ticket=...`` then carries the frames read and written by
``dingtalk_stream_frames``. The client answers pings, follows ``disconnect``, and connects again with
back-off (1 s doubling to 60 s, plus jitter) whenever the socket closes or the open call fails; an open
refused for the app's credentials is retried at the cap. Each event comes out as a ``StreamDelivery``
naming the socket it arrived on; it is acked only when the caller says so (``ack``): an event never
acked is delivered again by DingTalk, with the same message id.

Asyncio only (it runs in Airflow's triggerer). The connection is the DingTalk hook's: ``login`` = app
key, ``password`` = app secret, the API host as ``DingTalkConnectionConfig.api_base_url`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import platform
import random
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import websockets
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from websockets.asyncio.client import ClientConnection, connect

from dingtalk_kingdee.hooks.dingtalk_config import DingTalkConnectionConfig
from dingtalk_kingdee.hooks.dingtalk_stream_frames import (
    ACK_NOT_IMPLEMENTED,
    TOPIC_DISCONNECT,
    TOPIC_PING,
    OtherFrame,
    StreamEvent,
    StreamFrameError,
    SystemFrame,
    ack_frame,
    parse_frame,
)
from dingtalk_kingdee.hooks.transport import ExponentialBackoff, redact, register_secret

OPEN_PATH = "/v1.0/gateway/connections/open"
SUBSCRIPTIONS = [{"type": "EVENT", "topic": "*"}]
USER_AGENT = f"dingtalk-kingdee-stream/1.0 Python/{platform.python_version()}"

log = logging.getLogger(__name__)


class StreamOpenRefused(Exception):
    """DingTalk refused to open a connection for the app's credentials (HTTP 4xx but 429)."""


class StreamOpenFailed(Exception):
    """The open call failed in a way that may pass: network, 5xx, 429, an answer without endpoint."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """How long to wait before connecting again: ``min(cap, base·2^(n-1))`` plus up to ``jitter`` of
    it at random (many triggerers must not come back in step); refused credentials wait the cap."""

    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        wait = ExponentialBackoff(self.base, self.cap, jitter=False).delay(attempt)
        return wait + rng() * self.jitter * wait

    def refused_delay(self, rng: Callable[[], float] = random.random) -> float:
        return self.cap + rng() * self.jitter * self.cap


class StreamSocket:
    """One open WebSocket; numbered so log lines and acks can say which one."""

    def __init__(self, number: int, websocket: ClientConnection) -> None:
        self.number = number
        self.websocket = websocket
        self.closed = False
        self.frames = 0
        # The socket's events in arrival order, then None once it has closed.
        self.inbox: asyncio.Queue[StreamDelivery | None] = asyncio.Queue()

    async def send(self, text: str) -> bool:
        """Send one frame; False when the socket has closed meanwhile."""
        if self.closed:
            return False
        try:
            await self.websocket.send(text)
        except websockets.ConnectionClosed:
            self.closed = True
            return False
        return True


@dataclass(frozen=True)
class StreamDelivery:
    """One delivery of an event: the event and the socket to ack it on."""

    event: StreamEvent
    socket: StreamSocket


class DingTalkStreamClient:
    """The Stream-mode client of the app behind one DingTalk connection (knows nothing of schemes)."""

    def __init__(
        self,
        dingtalk_conn_id: str,
        *,
        policy: ReconnectPolicy | None = None,
        open_timeout: float = 10.0,
        ping_interval: float | None = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.dingtalk_conn_id = dingtalk_conn_id
        self.policy = policy or ReconnectPolicy()
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self._rng = rng
        self._numbers = itertools.count(1)
        self._current: StreamSocket | None = None
        self.connections_opened = 0

    # ---- the connection ---------------------------------------------------------------------

    async def _config(self) -> DingTalkConnectionConfig:
        """Read the connection at every open: a corrected secret takes effect without a restart."""
        try:
            connection = await BaseHook.aget_connection(self.dingtalk_conn_id)
            config = DingTalkConnectionConfig.from_connection(connection)
        except (AirflowNotFoundException, ValueError) as exc:
            raise StreamOpenRefused(f"connection unusable: {redact(str(exc))}") from None
        register_secret(config.app_secret)
        return config

    async def open_endpoint(self) -> str:
        """The WebSocket URL (endpoint with its single-use ticket) DingTalk gives for this app."""
        config = await self._config()
        url = f"{config.api_base_url}{OPEN_PATH}"
        local_ip = await asyncio.to_thread(_local_ip, config.api_base_url)
        body = {"clientId": config.app_key, "clientSecret": config.app_secret,
                "subscriptions": SUBSCRIPTIONS, "ua": USER_AGENT, "localIp": local_ip}
        try:
            async with httpx.AsyncClient(timeout=self.open_timeout) as http:
                response = await http.post(url, json=body, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise StreamOpenFailed(f"POST {url} failed: {type(exc).__name__}: {redact(str(exc))}") from None
        answer = _json_object(response)
        if 400 <= response.status_code < 500 and response.status_code != 429:
            message = redact(str(answer.get("message")))
            raise StreamOpenRefused(f"HTTP {response.status_code} code={answer.get('code')!r} message={message!r}; "
                                    "check the app key (login) and app secret (password)")
        endpoint, ticket = answer.get("endpoint"), answer.get("ticket")
        if response.status_code != 200 or not endpoint or not ticket:
            raise StreamOpenFailed(f"POST {url} answered HTTP {response.status_code} without endpoint and ticket: "
                                   f"{redact(response.text[:200])}")
        separator = "&" if "?" in endpoint else "?"
        return f"{endpoint}{separator}ticket={quote(str(ticket), safe='')}"

    # ---- events -----------------------------------------------------------------------------

    async def deliveries(self) -> AsyncIterator[StreamDelivery]:
        """Every event delivered to the app, forever: connects, and connects again after any close."""
        attempt = 0
        while True:
            try:
                stream_socket = await self._connect()
            except StreamOpenRefused as exc:
                wait = self.policy.refused_delay(self._rng)
                log.error("DingTalk Stream connection for connection %r refused: %s; trying again in %.0f s",
                          self.dingtalk_conn_id, exc, wait)
                await asyncio.sleep(wait)
                continue
            except Exception as exc:  # network, 5xx, handshake, reading the connection: all may pass
                attempt += 1
                wait = self.policy.delay(attempt, self._rng)
                log.warning("DingTalk Stream connection for connection %r could not be opened (%s: %s); trying "
                            "again in %.1f s", self.dingtalk_conn_id, type(exc).__name__, redact(str(exc)), wait)
                await asyncio.sleep(wait)
                continue
            reader = asyncio.create_task(self._read(stream_socket), name=f"dingtalk-stream-{stream_socket.number}")
            try:
                while (delivery := await stream_socket.inbox.get()) is not None:
                    yield delivery
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                stream_socket.closed = True
                await stream_socket.websocket.close()
            # A socket that carried frames was a good connection: the back-off starts over.
            attempt = 1 if stream_socket.frames else attempt + 1
            wait = self.policy.delay(attempt, self._rng)
            log.info("DingTalk Stream connection %d closed after %d frames; connecting again in %.1f s",
                     stream_socket.number, stream_socket.frames, wait)
            await asyncio.sleep(wait)

    async def _connect(self) -> StreamSocket:
        endpoint = await self.open_endpoint()
        websocket = await connect(endpoint, open_timeout=self.open_timeout, ping_interval=self.ping_interval,
                                  max_size=None)
        stream_socket = self._current = StreamSocket(next(self._numbers), websocket)
        self.connections_opened += 1
        log.info("DingTalk Stream connection %d open for connection %r", stream_socket.number, self.dingtalk_conn_id)
        return stream_socket

    async def _read(self, stream_socket: StreamSocket) -> None:
        """Read the socket for as long as it is open, whether or not the events are being taken (a
        ping must be answered at once): events go to the socket's inbox, then None when it closes or
        the server says ``disconnect``."""
        try:
            async for text in stream_socket.websocket:
                stream_socket.frames += 1
                try:
                    frame = parse_frame(text)
                except StreamFrameError as exc:
                    log.warning("DingTalk Stream connection %d: ignored a frame: %s", stream_socket.number, exc)
                    continue
                if isinstance(frame, StreamEvent):
                    stream_socket.inbox.put_nowait(StreamDelivery(frame, stream_socket))
                elif isinstance(frame, SystemFrame) and frame.topic == TOPIC_PING:
                    await stream_socket.send(ack_frame(frame.message_id, frame.data))
                elif isinstance(frame, SystemFrame) and frame.topic == TOPIC_DISCONNECT:
                    log.info("DingTalk Stream connection %d: the server asked to disconnect", stream_socket.number)
                    return
                elif isinstance(frame, OtherFrame):
                    # Only EVENT is subscribed; say "not implemented" rather than leave it to redelivery.
                    log.warning("DingTalk Stream connection %d: %s frame (topic %r) not handled", stream_socket.number,
                                frame.frame_type, frame.topic)
                    await stream_socket.send(ack_frame(frame.message_id, code=ACK_NOT_IMPLEMENTED,
                                                       message="not implemented"))
                else:
                    log.info("DingTalk Stream connection %d: SYSTEM frame (topic %r) ignored", stream_socket.number,
                             frame.topic)
        except websockets.ConnectionClosed as exc:
            log.info("DingTalk Stream connection %d lost: %s", stream_socket.number, exc)
        except Exception:  # whatever broke this socket, the next one may work
            log.exception("DingTalk Stream connection %d failed", stream_socket.number)
        finally:
            # Acks from now on are dropped: the server delivers the unacked events again.
            stream_socket.closed = True
            stream_socket.inbox.put_nowait(None)

    async def ack(self, delivery: StreamDelivery) -> bool:
        """Ack one delivery with 200 on the socket it came on; False (and a log line) when that socket
        has closed since: DingTalk then delivers the event again."""
        if await delivery.socket.send(ack_frame(delivery.event.message_id)):
            return True
        log.info("DingTalk Stream: ack of message %s dropped, connection %d has closed; DingTalk will deliver "
                 "the event again", delivery.event.message_id, delivery.socket.number)
        return False

    async def aclose(self) -> None:
        """Close the open socket, if any."""
        if self._current is not None and not self._current.closed:
            self._current.closed = True
            await self._current.websocket.close()


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _local_ip(api_base_url: str) -> str:
    """The local address of the route to the API host (a UDP "connect" sends nothing)."""
    host = urlsplit(api_base_url).hostname or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 80))
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
