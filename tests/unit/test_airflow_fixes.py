"""The api-server middleware that lets the connection list's Test button test a portless connection."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from dingtalk_kingdee.airflow_fixes import ConnectionTestPortZeroIsNoPort, DingTalkKingdeeAirflowFixes


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"body": json.loads(await request.body()),
                         "content_length": request.headers.get("content-length")})


def client() -> TestClient:
    app = Starlette(routes=[Route("/api/v2/connections/test", echo, methods=["POST"]),
                            Route("/api/v2/connections", echo, methods=["POST"])])
    app.add_middleware(ConnectionTestPortZeroIsNoPort)
    return TestClient(app)


# What the connection list's Test button posts for a connection stored without a port (Airflow 3.3.2).
UI_BODY = {"conn_type": "kingdee", "connection_id": "kingdee_default", "description": "", "extra": "{}",
           "host": "http://127.0.0.1:8802/k3cloud/", "login": "demo", "password": "***", "port": 0, "schema": ""}


def test_the_test_request_of_a_portless_connection_goes_on_without_port_0():
    answer = client().post("/api/v2/connections/test", json=UI_BODY).json()
    assert answer["body"] == {k: v for k, v in UI_BODY.items() if k != "port"}
    assert int(answer["content_length"]) == len(json.dumps(answer["body"]).encode())


def test_a_real_port_and_other_routes_are_left_alone():
    with_port = {**UI_BODY, "port": 8802}
    assert client().post("/api/v2/connections/test", json=with_port).json()["body"] == with_port
    assert client().post("/api/v2/connections", json=UI_BODY).json()["body"] == UI_BODY


def test_the_plugin_declares_the_middleware_for_the_api_server():
    (entry,) = DingTalkKingdeeAirflowFixes.fastapi_root_middlewares
    assert entry["middleware"] is ConnectionTestPortZeroIsNoPort
