"""The emulator's own endpoints under ``/_emulator/``: health, bills, call counts, faults (the
shared fault API of ``dk_emulators.faults``), dropping sessions and resetting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import Response

from dk_emulators.faults import add_fault_routes
from dk_emulators.kingdee.wire import json_response

if TYPE_CHECKING:
    from dk_emulators.kingdee.emulator import KingdeeEmulator


def add_admin_routes(app: FastAPI, emulator: KingdeeEmulator) -> None:
    @app.get("/_emulator/health")
    async def health() -> Response:
        return json_response({"status": "ok", "bills": emulator.store.count(),
                              "sessions": emulator.auth.session_count, "acct_id": emulator.acct_id})

    @app.get("/_emulator/bills")
    async def list_bills(form_id: str = "AP_PAYBILL") -> Response:
        return json_response(emulator.bills(form_id))

    @app.get("/_emulator/calls")
    async def list_calls() -> Response:
        return json_response(dict(emulator.calls))

    add_fault_routes(
        app, emulator.fault_board, target_alias="service",
        arm=lambda kind, target, times, rate, **params: emulator.inject(
            {"kind": kind, **params}, service=target, times=times, rate=rate))

    @app.post("/_emulator/sessions/drop")
    async def drop_all_sessions() -> Response:
        emulator.drop_sessions()
        return json_response({"dropped": True})

    @app.post("/_emulator/reset")
    async def reset() -> Response:
        emulator.reset()
        return json_response({"reset": True})
