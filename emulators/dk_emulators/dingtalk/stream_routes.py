"""The HTTP and WebSocket routes of Stream mode, on the emulator's own server:

- ``POST /v1.0/gateway/connections/open`` -> ``{"endpoint", "ticket"}`` (4xx ``{"code", "message"}``);
- ``WS /v1.0/gateway/stream?ticket=`` -> the frames of ``StreamHub``;
- ``GET /_emulator/stream`` (state), ``POST /_emulator/stream/disconnect`` and ``/_emulator/stream/drop``;
- ``/_emulator/stream/faults``: the Stream faults, with the fault API of ``dk_emulators.faults``.

The open call is not metered (reference "Metered calls": event pushes are not API calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from dk_emulators.dingtalk.stream import DISCONNECT_GRACE_SECONDS, StreamConnection, StreamHub
from dk_emulators.dingtalk.wire import request_id
from dk_emulators.faults import RAW_SEND_SCOPE_KEY, add_fault_routes, drop_connection

if TYPE_CHECKING:
    from dk_emulators.dingtalk.emulator import DingTalkEmulator

OPEN_PATH = "/v1.0/gateway/connections/open"
STREAM_PATH = "/v1.0/gateway/stream"


def refusal(status: int, code: str, message: str) -> JSONResponse:
    """An api.dingtalk.com (v1.0) error answer. UNVERIFIED: the codes and messages of this API."""
    return JSONResponse({"code": code, "message": message, "requestid": request_id()}, status_code=status)


def socket_endpoint(request: Request) -> str:
    """The WebSocket address on the server that answered (ws:// for http://)."""
    base = str(request.base_url).rstrip("/")
    return "ws" + base.removeprefix("http") + STREAM_PATH


def add_stream_routes(app: FastAPI, emulator: DingTalkEmulator) -> None:
    hub: StreamHub = emulator.stream

    @app.post(OPEN_PATH)
    async def open_connection(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return refusal(400, "InvalidParameter", "the body must be a JSON object")
        if not body.get("clientId") or not body.get("clientSecret"):
            return refusal(400, "MissingParameter", "clientId and clientSecret are required")
        refused = hub.open_refusal()
        if refused is not None:
            return refusal(refused[0], refused[1], "connection refused by an injected fault")
        if not hub.credentials_ok(body["clientId"], body["clientSecret"]):
            return refusal(401, "InvalidAuthentication", "不合法的clientId或clientSecret")
        subscriptions = body.get("subscriptions") or []
        if not isinstance(subscriptions, list):
            return refusal(400, "InvalidParameter", "subscriptions must be a list")
        ticket = hub.issue_ticket(body["clientId"], subscriptions, str(body.get("ua", "")),
                                  str(body.get("localIp", "")))
        return JSONResponse({"endpoint": socket_endpoint(request), "ticket": ticket})

    @app.websocket(STREAM_PATH)
    async def stream_socket(websocket: WebSocket) -> None:
        ticket = hub.redeem(websocket.query_params.get("ticket"))
        if ticket is None:
            await websocket.close(code=1008)  # before accept: the handshake is refused with HTTP 403
            return
        await websocket.accept()
        raw_send = websocket.scope.get(RAW_SEND_SCOPE_KEY)
        connection = hub.attach(ticket, abort=lambda: drop_connection(raw_send))
        writer = asyncio.create_task(write_frames(websocket, connection))
        try:
            while True:
                hub.received(connection, await websocket.receive_text())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            hub.detach(connection)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    @app.get("/_emulator/stream")
    async def stream_state() -> dict:
        return hub.state()

    @app.post("/_emulator/stream/disconnect")
    async def disconnect_all() -> dict:
        return {"ok": True, "connections": hub.disconnect_all()}

    @app.post("/_emulator/stream/drop")
    async def drop_all() -> dict:
        return {"ok": True, "connections": hub.drop_all()}

    add_fault_routes(app, hub.faults, path="/_emulator/stream/faults",
                     arm=lambda kind, target, times, rate, **params: hub.inject(kind, times, rate, **params))


async def write_frames(websocket: WebSocket, connection: StreamConnection) -> None:
    """Send what the dispatcher put in the connection's outbox; "disconnect" / "abort" end it."""
    try:
        while True:
            item: Any = await connection.outbox.get()
            if item == "abort":
                connection.abort()
                return
            if item == "disconnect":
                await asyncio.sleep(DISCONNECT_GRACE_SECONDS)  # the client may close first, as the SDK does
                await websocket.close(code=1000)
                return
            await websocket.send_text(json.dumps(item, ensure_ascii=False))
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        return
