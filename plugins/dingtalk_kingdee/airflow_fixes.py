"""A workaround for an Airflow 3.3.2 bug that breaks the connection list's Test button.

The list row builds its test request with ``port: Number(connection.port)``, so a connection stored
without a port (every ``dingtalk`` and ``kingdee`` connection: their URL carries the port) is tested
with ``port: 0``. ``POST /api/v2/connections/test`` then finds the port "differs from the stored
connection" (``NULL``) and, the UI sending the masked password, answers 400 "Bad Request". Upstream
fixed it in the route (apache/airflow#73298: port 0 counts as blank); until the pinned Airflow has
that, this api-server middleware drops ``"port": 0`` from that one request, which is the same rule.
Nothing addresses port 0, so no real request changes meaning. Remove it with that upgrade.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TEST_CONNECTION_PATH = "/api/v2/connections/test"


def without_zero_port(body: bytes) -> bytes:
    """The request body with ``"port": 0`` removed; any other body unchanged."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if not isinstance(payload, dict) or payload.get("port") != 0 or isinstance(payload.get("port"), bool):
        return body
    del payload["port"]
    return json.dumps(payload).encode()


class ConnectionTestPortZeroIsNoPort:
    """ASGI middleware: applies :func:`without_zero_port` to ``POST .../api/v2/connections/test``."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or not scope.get("path", "").endswith(TEST_CONNECTION_PATH)):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to fix
                await self.app(scope, _replay(message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = without_zero_port(b"".join(chunks))
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers},
                       _replay({"type": "http.request", "body": body, "more_body": False}, receive), send)


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive channel that gives ``first``, then whatever the real channel gives."""
    pending = [first]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


class DingTalkKingdeeAirflowFixes(AirflowPlugin):
    name = "dingtalk_kingdee_airflow_fixes"
    fastapi_root_middlewares = [  # noqa: RUF012 (AirflowPlugin's own attribute, a plain list)
        {"name": "connection test: port 0 is no port", "middleware": ConnectionTestPortZeroIsNoPort},
    ]
