"""The group robot's webhook (``POST /robot/send?access_token=...``): its own access tokens, not the
app's; checks the message shape and keeps the message for the tests to read."""

from __future__ import annotations

import json
import threading

from fastapi.responses import JSONResponse

DEMO_ROBOT_TOKEN = "demo-robot-token"
ROBOT_MESSAGE_TYPES = frozenset({"text", "markdown", "link", "actionCard", "feedCard"})


class RobotWebhook:
    def __init__(self, tokens: set[str] | None = None) -> None:
        self.tokens: set[str] = set(tokens) if tokens is not None else {DEMO_ROBOT_TOKEN}
        self.messages: list[dict] = []
        self._lock = threading.Lock()

    def send(self, token: str, raw: bytes) -> JSONResponse:
        """Check the token and the message shape, keep the message."""
        if token not in self.tokens:
            # UNVERIFIED: errcode and text the real webhook gives an unknown robot token.
            return JSONResponse({"errcode": 300001, "errmsg": "token is not exist"})
        try:
            message = json.loads(raw or b"null")
        except ValueError:
            return JSONResponse({"errcode": 40035, "errmsg": "缺少参数 json"})
        kind = message.get("msgtype") if isinstance(message, dict) else None
        body = message.get(kind) if kind else None
        if kind not in ROBOT_MESSAGE_TYPES or not isinstance(body, dict):
            return JSONResponse({"errcode": 40035, "errmsg": f"不支持的消息类型 {kind!r} 或缺少消息体"})
        if kind == "markdown" and not (body.get("title") and body.get("text")):
            return JSONResponse({"errcode": 40035, "errmsg": "缺少参数 markdown.title 或 markdown.text"})
        with self._lock:
            self.messages.append(message)
        return JSONResponse({"errcode": 0, "errmsg": "ok"})
