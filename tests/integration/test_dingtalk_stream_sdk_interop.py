"""The emulator's Stream mode speaks the official SDK's protocol: ``dingtalk-stream`` 0.24.3,
unchanged, connects to it, receives the approval event and acks it."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from dk_emulators.dingtalk import DingTalkEmulator

from tests.fixtures.dingtalk_stream import stream_state, submitted, wait_until

pytest.importorskip("dingtalk_stream")

CLIENT = Path(__file__).with_name("dingtalk_stream_sdk_client.py")
SDK_UA = "dingtalk-sdk-python/v0.24.3-union"  # what the SDK sends as "ua" in the open call


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
    dingtalk_emulator.add_instances([submitted("PI-SDK-1", "PROC-EXPENSE-DEMO")])  # its start event too
    wait_until(lambda: stream_state(dingtalk_emulator)["open_connections"] == 1, timeout=30)
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

    wait_until(lambda: stream_state(dingtalk_emulator)["acked"] == 2, timeout=10)
    state = stream_state(dingtalk_emulator)
    ack = next(a for a in state["acks"] if a["message_id"] == finish["message_id"])
    assert ack["code"] == 200 and ack["message"] == "OK" and ack["ua"] == SDK_UA
    assert state["pending"] == 0 and state["redelivered"] == 0


def test_the_official_sdk_answers_pings_and_reconnects_after_disconnect(dingtalk_emulator, sdk_client):
    wait_until(lambda: stream_state(dingtalk_emulator)["open_connections"] == 1, timeout=30)
    requests.post(f"{dingtalk_emulator.base_url}/_emulator/config", json={"stream_ping_seconds": 0.2}, timeout=10)
    wait_until(lambda: stream_state(dingtalk_emulator)["pongs"] >= 2, timeout=10)

    first = stream_state(dingtalk_emulator)["connections"][0]["connection_id"]
    answer = requests.post(f"{dingtalk_emulator.base_url}/_emulator/stream/disconnect", timeout=10)
    assert answer.json()["connections"] == 1

    def open_ids() -> list[str]:
        return [c["connection_id"] for c in stream_state(dingtalk_emulator)["connections"]]

    wait_until(lambda: open_ids() not in ([], [first]), timeout=30)
    state = stream_state(dingtalk_emulator)
    assert state["connections_opened"] == 2 and state["disconnect_acks"] == 1
