"""The emulator's Stream mode speaks the official SDK's protocol: ``dingtalk-stream`` 0.24.3,
unchanged, connects to it, receives the approval event and acks it."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from dk_emulators.dingtalk import DingTalkEmulator

pytest.importorskip("dingtalk_stream")

CLIENT = Path(__file__).with_name("dingtalk_stream_sdk_client.py")
SDK_UA = "dingtalk-sdk-python/v0.24.3-union"  # what the SDK sends as "ua" in the open call


def running_instance(instance_id: str) -> dict:
    return {"process_instance_id": instance_id, "process_code": "PROC-EXPENSE-DEMO",
            "create_time": "2026-03-02 09:00:00", "originator_userid": "manager4500", "status": "RUNNING",
            "result": "", "business_id": f"B-{instance_id}", "title": "张伟提交的报销",
            "form_component_values": [], "operation_records": [],
            "tasks": [{"userid": "manager4503", "task_status": "RUNNING", "task_result": "NONE"}]}


def stream_state(emulator: DingTalkEmulator) -> dict:
    return requests.get(f"{emulator.base_url}/_emulator/stream", timeout=10).json()


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture
def sdk_client(dingtalk_emulator: DingTalkEmulator):
    """The SDK's client in a subprocess whose environment names the emulator as the OpenAPI host;
    yields a queue of the events its handler printed."""
    env = {**os.environ, "DINGTALK_OPENAPI_ENDPOINT": dingtalk_emulator.base_url}
    proc = subprocess.Popen([sys.executable, str(CLIENT), dingtalk_emulator.app_key, dingtalk_emulator.app_secret],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        yield lines
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_official_sdk_receives_and_acks_an_approval_event(dingtalk_emulator, sdk_client):
    dingtalk_emulator.add_instances([running_instance("PI-SDK-1")])  # its start event too
    wait_for(lambda: stream_state(dingtalk_emulator)["open_connections"] == 1, timeout=30)
    connection = stream_state(dingtalk_emulator)["connections"][0]
    assert connection["ua"] == SDK_UA and connection["subscriptions"] == [{"type": "EVENT", "topic": "*"}]

    answer = requests.post(f"{dingtalk_emulator.base_url}/_emulator/outcome",
                           json={"instance_id": "PI-SDK-1", "status": "COMPLETED", "result": "agree"}, timeout=10)
    assert answer.json()["ok"]
    received = []
    while not any(e["data"]["type"] == "finish" for e in received):
        received.append(json.loads(sdk_client.get(timeout=30)))
    finish = next(e for e in received if e["data"]["type"] == "finish")
    assert finish["event_type"] == "bpms_instance_change" and finish["event_id"]
    assert finish["data"]["processInstanceId"] == "PI-SDK-1" and finish["data"]["result"] == "agree"

    wait_for(lambda: stream_state(dingtalk_emulator)["acked"] == 2, timeout=10)
    state = stream_state(dingtalk_emulator)
    ack = next(a for a in state["acks"] if a["message_id"] == finish["message_id"])
    assert ack["code"] == 200 and ack["message"] == "OK" and ack["ua"] == SDK_UA
    assert state["pending"] == 0 and state["redelivered"] == 0


def test_the_official_sdk_answers_pings_and_reconnects_after_disconnect(dingtalk_emulator, sdk_client):
    wait_for(lambda: stream_state(dingtalk_emulator)["open_connections"] == 1, timeout=30)
    requests.post(f"{dingtalk_emulator.base_url}/_emulator/config", json={"stream_ping_seconds": 0.2}, timeout=10)
    wait_for(lambda: stream_state(dingtalk_emulator)["pongs"] >= 2, timeout=10)

    first = stream_state(dingtalk_emulator)["connections"][0]["connection_id"]
    answer = requests.post(f"{dingtalk_emulator.base_url}/_emulator/stream/disconnect", timeout=10)
    assert answer.json()["connections"] == 1
    wait_for(lambda: [c["connection_id"] for c in stream_state(dingtalk_emulator)["connections"]] not in ([], [first]),
             timeout=30)
    state = stream_state(dingtalk_emulator)
    assert state["connections_opened"] == 2 and state["disconnect_acks"] == 1
