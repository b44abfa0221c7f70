"""Injected faults, one mechanism for both emulators.

An emulator owns a ``FaultBoard`` that knows its fault kinds (name -> what it does) and, optionally,
the targets a fault may be aimed at (an API or service name). ``arm`` puts a fault on the board;
``take`` / ``take_first`` draw the armed faults matching a call: each fires with probability
``rate`` (None = always), counts against ``times`` (None = until disarmed) and leaves the board once
spent; ``after`` lets that many matching calls pass untouched first. What a fired fault does to
the answer is the emulator's business, except dropping the connection, which is the same for both:
a route marks the request with ``request_drop`` and the ``DropGuard`` around the app aborts the TCP
connection instead of answering.

``add_fault_routes`` serves the same admin API on both emulators:

- ``POST /_emulator/faults`` ``{"fault": <kind>, "target": <api or service>, "times": 1,
  "rate": null, "after": 0, ...kind parameters}`` -> ``{"ok": true, "fault": {...}}`` (400 with ``error``);
  ``"kind"`` is accepted for ``"fault"`` and the emulator's own word (``api`` / ``service``) for
  ``"target"``.
- ``GET /_emulator/faults`` -> ``{"faults": [...armed], "known": {kind: description}}``.
- ``DELETE /_emulator/faults`` -> ``{"ok": true, "cleared": <how many were armed>}``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

DROP_SCOPE_KEY = "dk_emulators.drop_connection"
RAW_SEND_SCOPE_KEY = "dk_emulators.raw_send"  # uvicorn's own send of a WebSocket, for drop_connection


@dataclass
class Fault:
    """One armed fault: ``kind`` aimed at ``target`` (None = every call), with its countdown."""

    kind: str
    target: str | None = None
    times: int | None = 1
    rate: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0
    after: int = 0  # matching calls still to let pass before the fault starts firing

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "times": self.times, "rate": self.rate,
                "fired": self.fired, "after": self.after, **self.params}


class FaultBoard:
    """The faults armed on one emulator; thread-safe, seeded so a run with rates is reproducible.

    ``kinds``: fault name -> description. ``targets``: the names a fault may be aimed at (None =
    any). ``normalize``: maps a target and a call's name to what is compared (Kingdee compares the
    short service name). ``params``: extra parameters every kind may carry, with their defaults;
    ``kind_params``: those only some kinds carry (kind -> parameters with their defaults).
    """

    def __init__(self, kinds: Mapping[str, str], *, targets: Collection[str] | None = None,
                 normalize: Callable[[str], str] = str, params: Mapping[str, Any] | None = None,
                 kind_params: Mapping[str, Mapping[str, Any]] | None = None, seed: int | None = None) -> None:
        self.kinds = dict(kinds)
        self.targets = targets
        self.normalize = normalize
        self.params = dict(params or {})
        self.kind_params = {kind: dict(defaults) for kind, defaults in (kind_params or {}).items()}
        self._armed: list[Fault] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def arm(self, kind: str, target: str | None = None, times: int | None = 1, rate: float | None = None,
            after: int = 0, **params: Any) -> Fault:
        """Arm ``kind`` for the next ``times`` matching calls (after ``after`` untouched ones), each
        drawn with probability ``rate``."""
        if kind not in self.kinds:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(sorted(self.kinds))}")
        if target is not None and self.targets is not None and target not in self.targets:
            raise ValueError(f"unknown target {target!r}; known: {', '.join(self.targets)}")
        if rate is not None and not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError("after must be a whole number ≥ 0")
        defaults = {**self.params, **self.kind_params.get(kind, {})}
        unknown = set(params) - set(defaults)
        if unknown:
            raise ValueError(f"unknown fault parameters: {sorted(unknown)}")
        fault = Fault(kind=kind, target=target, times=times, rate=rate, params={**defaults, **params}, after=after)
        with self._lock:
            self._armed.append(fault)
        return fault

    def disarm(self) -> int:
        """Remove every armed fault; returns how many there were."""
        with self._lock:
            count = len(self._armed)
            self._armed.clear()
        return count

    @property
    def armed(self) -> list[Fault]:
        with self._lock:
            return list(self._armed)

    def take(self, call: str) -> list[Fault]:
        """Every armed fault that fires on this call (several may: latency and an error, say)."""
        return self._draw(call, first_only=False)

    def take_first(self, call: str) -> Fault | None:
        """The first armed fault that fires on this call; the others are not drawn."""
        fired = self._draw(call, first_only=True)
        return fired[0] if fired else None

    def _draw(self, call: str, first_only: bool) -> list[Fault]:
        name = self.normalize(call)
        fired: list[Fault] = []
        with self._lock:
            for fault in list(self._armed):
                if fault.target is not None and self.normalize(fault.target) != name:
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                if fault.rate is not None and self._rng.random() >= fault.rate:
                    continue
                fault.fired += 1
                if fault.times is not None and fault.fired >= fault.times:
                    self._armed.remove(fault)
                fired.append(fault)
                if first_only:
                    break
        return fired


# ------------------------------------------------------------------------- dropping a connection

def drop_connection(send: Any) -> None:
    """Close the client connection without answering (uvicorn h11 only).

    ``send`` is uvicorn's ASGI send callable: uvicorn binds it to the request cycle, which holds
    the transport.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("drop_connection needs uvicorn's h11 protocol")
    transport.abort()


def request_drop(request: Request) -> None:
    """Ask the ``DropGuard`` to abort this request's connection instead of sending the answer."""
    request.scope[DROP_SCOPE_KEY] = True


class DropGuard:
    """ASGI wrapper that aborts the TCP connection instead of answering when a route asked for it.

    It sits outside FastAPI so that it holds uvicorn's own ``send`` (FastAPI's middlewares wrap
    it), which ``drop_connection`` needs. Whatever the route did before asking (commit a save, say)
    stays done: that is the "committed, but the client never heard" fault.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND_SCOPE_KEY] = send  # FastAPI wraps send; dropping a socket needs uvicorn's own
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dropped = False

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal dropped
            if dropped:
                return
            if message["type"] == "http.response.start" and scope.get(DROP_SCOPE_KEY):
                dropped = True
                drop_connection(send)
                return
            await send(message)

        await self.app(scope, receive, guarded_send)


# ------------------------------------------------------------------------------------ admin API

def add_fault_routes(app: FastAPI, board: FaultBoard,
                     arm: Callable[..., Fault] | None = None, target_alias: str | None = None,
                     path: str = "/_emulator/faults") -> None:
    """Serve ``path`` (``/_emulator/faults``, see the module docstring) for ``board``.

    ``arm`` (default ``board.arm``) is called as ``arm(kind, target, times, rate, **params)``, so
    an emulator can apply its own defaults; ``target_alias`` is the emulator's word for ``target``.
    """
    arm = arm or board.arm

    def bad(message: str) -> JSONResponse:
        return JSONResponse({"ok": False, "error": message}, status_code=400)

    @app.post(path)
    async def add_fault(request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return bad("expected a JSON object")
        options = dict(payload)
        kind = options.pop("fault", None) or options.pop("kind", None)
        if not kind:
            return bad("missing field: fault")
        target = options.pop("target", None)
        if target_alias is not None:
            target = options.pop(target_alias, None) or target
        times = options.pop("times", 1)
        rate = options.pop("rate", None)
        try:
            fault = arm(kind, target, times, None if rate is None else float(rate), **options)
        except (TypeError, ValueError) as error:
            return bad(str(error))
        return JSONResponse({"ok": True, "fault": fault.as_dict()})

    @app.get(path)
    async def list_faults() -> dict[str, Any]:
        return {"faults": [f.as_dict() for f in board.armed], "known": board.kinds}

    @app.delete(path)
    async def clear_faults() -> dict[str, Any]:
        return {"ok": True, "cleared": board.disarm()}
