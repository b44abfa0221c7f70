"""The emulator's own endpoints under ``/_emulator/``: health, state, instances (add, read, delete), outcomes, faults
(the shared fault API of ``dk_emulators.faults``), comments, token expiry and live settings."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from dk_emulators.dingtalk.stream import STREAM_SETTINGS
from dk_emulators.dingtalk.wire import WRAP_STYLES
from dk_emulators.faults import add_fault_routes

if TYPE_CHECKING:
    from dk_emulators.dingtalk.emulator import DingTalkEmulator

# Settings /_emulator/config may change on a running emulator.
LIVE_SETTINGS = frozenset({"qps", "latency_ms", "token_ttl", "wrap_errors", "qps_penalty_s", "hang_seconds",
                           "monthly_quota", *STREAM_SETTINGS})


def add_admin_routes(app: FastAPI, emulator: DingTalkEmulator) -> None:
    def bad(message: str) -> JSONResponse:
        return JSONResponse({"ok": False, "error": message}, status_code=400)

    async def read_json(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    @app.get("/_emulator/health")
    async def health() -> dict:
        return {"ok": True, "emulator": "dingtalk"}

    @app.get("/_emulator/state")
    async def state() -> dict:
        return emulator.state()

    @app.post("/_emulator/instances")
    async def add_instances(request: Request) -> Response:
        payload = await read_json(request)
        items = payload.get("instances") if isinstance(payload, dict) else payload
        if not isinstance(items, list):
            return bad("expected a JSON list of instances or {\"instances\": [...]}")
        try:
            added = emulator.add_instances(items)
        except (TypeError, ValueError) as error:
            return bad(str(error))
        return JSONResponse({"ok": True, "added": added, "instances": emulator.instance_count})

    @app.get("/_emulator/instances/{instance_id}")
    async def get_instance(instance_id: str) -> Response:
        try:
            return JSONResponse(emulator.get_instance(instance_id))
        except KeyError:
            return JSONResponse({"ok": False, "error": "unknown instance"}, status_code=404)

    @app.delete("/_emulator/instances/{instance_id}")
    async def delete_instance(instance_id: str) -> Response:
        try:
            emulator.delete_instance(instance_id)
        except KeyError:
            return JSONResponse({"ok": False, "error": "unknown instance"}, status_code=404)
        return JSONResponse({"ok": True, "deleted": instance_id, "instances": emulator.instance_count})

    @app.post("/_emulator/outcome")
    async def outcome(request: Request) -> Response:
        payload = await read_json(request)
        if not isinstance(payload, dict):
            return bad("expected a JSON object")
        try:
            updated = emulator.set_outcome(payload["instance_id"], payload["status"],
                                           payload.get("result", ""), payload.get("finish_time"))
        except KeyError as error:
            return bad(f"unknown instance or missing field: {error}")
        except ValueError as error:
            return bad(str(error))
        return JSONResponse({"ok": True, "instance": updated})

    add_fault_routes(
        app, emulator.fault_board, target_alias="api",
        arm=lambda kind, target, times, rate, **params: emulator.inject(kind, api=target, times=times, rate=rate,
                                                                       **params))

    @app.get("/_emulator/comments")
    async def comments() -> dict:
        return {"comments": list(emulator.comments)}

    @app.post("/_emulator/tokens/expire")
    async def expire() -> dict:
        emulator.expire_tokens()
        return {"ok": True}

    @app.get("/_emulator/clock")
    async def clock() -> dict:
        return {"now": emulator.clock().isoformat(), "simulated": emulator.sim_clock.simulated}

    @app.post("/_emulator/clock")
    async def set_clock(request: Request) -> Response:
        """``{"now": ISO 8601 with offset}`` pins the clock, ``{"advance_s": N}`` moves it,
        ``{"real": true}`` gives it back to real time."""
        payload = await read_json(request)
        if not isinstance(payload, dict):
            return bad("expected a JSON object")
        try:
            if payload.get("real"):
                emulator.sim_clock.release()
            elif "now" in payload:
                emulator.set_clock(datetime.fromisoformat(str(payload["now"])))
            elif "advance_s" in payload:
                emulator.advance_clock(float(payload["advance_s"]))
            else:
                return bad('expected "now", "advance_s" or "real"')
        except (TypeError, ValueError) as error:
            return bad(str(error))
        return JSONResponse({"ok": True, "now": emulator.clock().isoformat(),
                             "simulated": emulator.sim_clock.simulated})

    @app.get("/_emulator/usage")
    async def usage() -> dict:
        return emulator.usage()

    @app.post("/_emulator/config")
    async def config(request: Request) -> Response:
        payload = await read_json(request)
        if not isinstance(payload, dict):
            return bad("expected a JSON object")
        unknown = set(payload) - LIVE_SETTINGS
        if unknown:
            return bad(f"unknown settings: {sorted(unknown)}")
        if "wrap_errors" in payload and payload["wrap_errors"] not in WRAP_STYLES:
            return bad(f"wrap_errors must be one of {WRAP_STYLES}")
        quota = payload.get("monthly_quota")
        if quota is not None and (isinstance(quota, bool) or not isinstance(quota, int) or quota < 0):
            return bad("monthly_quota must be a whole number ≥ 0 or null (no quota)")
        for name in STREAM_SETTINGS.keys() & payload.keys():
            value = payload[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                return bad(f"{name} must be a number of seconds > 0")
        for name, value in payload.items():
            if name in STREAM_SETTINGS:
                setattr(emulator.stream, STREAM_SETTINGS[name], value)
            else:
                setattr(emulator, name, value)
        return JSONResponse({"ok": True, "config": emulator.state()["config"]})
