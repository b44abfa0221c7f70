"""The DingTalk emulator's Stream mode over a real WebSocket on 127.0.0.1, spoken to with the
``websockets`` package's client (not the product's stream client)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

import pytest
import requests
from dk_emulators.dingtalk import CHINA_TZ, DingTalkEmulator
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.fixtures.dingtalk_stream import stream_state, wait_until

PROCESS_CODE = "PROC-EXPENSE-DEMO"
EVENTS = [{"type": "EVENT", "topic": "*"}]


def china(moment: datetime) -> str:
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def running_instance(instance_id: str, created: datetime | None = None) -> dict:
    created = created or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    return {"process_instance_id": instance_id, "process_code": PROCESS_CODE, "create_time": china(created),
            "originator_userid": "manager4500", "status": "RUNNING", "result": "", "business_id": f"B-{instance_id}",
            "title": "张伟提交的报销", "form_component_values": [], "operation_records": [],
            "tasks": [{"userid": "manager4503", "task_status": "RUNNING", "task_result": "NONE"}]}


def open_call(emulator: DingTalkEmulator, client_id: str | None = None, client_secret: str | None = None,
              subscriptions: list | None = None) -> requests.Response:
    body = {"clientId": client_id or emulator.app_key, "clientSecret": client_secret or emulator.app_secret,
            "subscriptions": EVENTS if subscriptions is None else subscriptions,
            "ua": "dk-tests/1.0", "localIp": "127.0.0.1"}
    return requests.post(f"{emulator.base_url}/v1.0/gateway/connections/open", json=body, timeout=10)


def socket_url(answer: requests.Response) -> str:
    opened = answer.json()
    return f"{opened['endpoint']}?ticket={quote_plus(opened['ticket'])}"


def connect_stream(emulator: DingTalkEmulator, subscriptions: list | None = None) -> ClientConnection:
    answer = open_call(emulator, subscriptions=subscriptions)
    assert answer.status_code == 200, answer.text
    return connect(socket_url(answer), open_timeout=10)


def next_frame(ws: ClientConnection, kind: str = "EVENT", timeout: float = 5.0) -> dict:
    """The next frame of ``kind`` (pings are answered on the way, as a client does)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] == kind:
            return frame
        if frame["headers"].get("topic") == "ping":
            ack(ws, frame, data=frame["data"])


def no_event_within(ws: ClientConnection, seconds: float) -> bool:
    try:
        next_frame(ws, timeout=seconds)
    except TimeoutError:
        return True
    return False


def ack(ws: ClientConnection, frame: dict, code: int = 200, data: str = "{}") -> None:
    ws.send(json.dumps({"code": code, "headers": {"contentType": "application/json",
                                                  "messageId": frame["headers"]["messageId"]},
                        "message": "OK" if code == 200 else "failed", "data": data}))


@pytest.fixture
def emulator() -> DingTalkEmulator:
    emulator = DingTalkEmulator(instances=[running_instance("PI-1"), running_instance("PI-2")],
                                stream_ping_seconds=60, stream_redelivery_seconds=0.5)
    emulator.start()
    yield emulator
    emulator.stop()


def approve(emulator: DingTalkEmulator, instance_id: str, result: str = "agree") -> None:
    answer = requests.post(f"{emulator.base_url}/_emulator/outcome",
                           json={"instance_id": instance_id, "status": "COMPLETED", "result": result}, timeout=10)
    assert answer.json()["ok"], answer.text


# ------------------------------------------------------------------------------ connecting
def test_open_answers_a_local_endpoint_and_a_single_use_ticket(emulator):
    answer = open_call(emulator)
    assert answer.status_code == 200
    opened = answer.json()
    assert opened["endpoint"] == f"ws://127.0.0.1:{emulator.base_url.rsplit(':', 1)[1]}/v1.0/gateway/stream"
    assert opened["ticket"]
    with connect(socket_url(answer)) as ws:
        wait_until(lambda: stream_state(emulator)["open_connections"] == 1)
        assert ws.protocol.state.name == "OPEN"
    with pytest.raises(InvalidStatus) as refused:
        connect(socket_url(answer), open_timeout=5)
    assert refused.value.response.status_code == 403


def test_open_refuses_a_wrong_secret_or_an_unknown_key(emulator):
    for key, secret in ((None, "wrong"), ("nobody", "demo-app-secret")):
        answer = open_call(emulator, client_id=key, client_secret=secret)
        assert 400 <= answer.status_code < 500
        body = answer.json()
        assert body["code"] and body["message"] and "ticket" not in body


def test_open_calls_are_not_metered(emulator):
    emulator.monthly_quota = 0
    assert open_call(emulator).status_code == 200
    assert emulator.usage()["used"] == 0


def test_ping_frames_come_at_the_configured_interval_and_acks_are_recorded(emulator):
    requests.post(f"{emulator.base_url}/_emulator/config", json={"stream_ping_seconds": 0.2}, timeout=10)
    with connect_stream(emulator) as ws:
        ping = next_frame(ws, kind="SYSTEM")
        assert ping["specVersion"] == "1.0" and ping["headers"]["topic"] == "ping"
        assert ping["headers"]["contentType"] == "application/json" and ping["headers"]["messageId"]
        assert "opaque" in json.loads(ping["data"])
        ack(ws, ping, data=ping["data"])
        second = next_frame(ws, kind="SYSTEM")
        assert second["headers"]["messageId"] != ping["headers"]["messageId"]
        wait_until(lambda: stream_state(emulator)["pongs"] >= 1)


# ------------------------------------------------------------------------------ events
def test_an_approval_through_the_admin_outcome_is_pushed_as_an_event(emulator):
    with connect_stream(emulator) as ws:
        approve(emulator, "PI-1")
        frame = next_frame(ws)
    headers = frame["headers"]
    assert headers["eventType"] == "bpms_instance_change" and headers["topic"] == "*"
    for name in ("appId", "connectionId", "messageId", "time", "eventId", "eventBornTime", "eventCorpId",
                 "eventUnifiedAppId"):
        assert headers[name], name
    assert headers["contentType"] == "application/json"
    body = json.loads(frame["data"])
    finished = emulator.get_instance("PI-1")["finish_time"]
    assert body["processInstanceId"] == "PI-1" and body["processCode"] == PROCESS_CODE
    assert body["type"] == "finish" and body["result"] == "agree" and body["businessId"] == "B-PI-1"
    assert body["title"] == "张伟提交的报销" and body["staffId"] == "manager4503"
    created = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert body["createTime"] == int(created.timestamp() * 1000)
    assert body["finishTime"] == int(datetime.strptime(finished, "%Y-%m-%d %H:%M:%S")
                                     .replace(tzinfo=CHINA_TZ).timestamp() * 1000)


def test_events_carry_the_emulator_clock(emulator):
    moment = datetime(2026, 4, 1, 10, 0, tzinfo=UTC)
    emulator.set_clock(moment)
    with connect_stream(emulator) as ws:
        emulator.set_outcome("PI-2", "TERMINATED")
        frame = next_frame(ws)
    body = json.loads(frame["data"])
    assert body["type"] == "terminate" and "result" not in body
    assert body["finishTime"] == int(moment.timestamp() * 1000)
    assert int(frame["headers"]["eventBornTime"]) == int(moment.timestamp() * 1000)
    assert int(frame["headers"]["time"]) == int(moment.timestamp() * 1000)


def test_an_added_instance_is_pushed_as_a_start_event(emulator):
    with connect_stream(emulator) as ws:
        requests.post(f"{emulator.base_url}/_emulator/instances", json=[running_instance("PI-9")], timeout=10)
        body = json.loads(next_frame(ws)["data"])
    assert body["type"] == "start" and body["processInstanceId"] == "PI-9" and body["staffId"] == "manager4500"
    assert "finishTime" not in body


def test_a_deleted_instance_is_pushed_as_a_delete_event_and_is_gone(emulator):
    with connect_stream(emulator) as ws:
        answer = requests.delete(f"{emulator.base_url}/_emulator/instances/PI-1", timeout=10)
        assert answer.json() == {"ok": True, "deleted": "PI-1", "instances": 1}
        body = json.loads(next_frame(ws)["data"])
    assert body["type"] == "delete" and body["processInstanceId"] == "PI-1" and body["businessId"] == "B-PI-1"
    assert "result" not in body and "finishTime" not in body
    assert requests.get(f"{emulator.base_url}/_emulator/instances/PI-1", timeout=10).status_code == 404
    assert requests.delete(f"{emulator.base_url}/_emulator/instances/PI-1", timeout=10).status_code == 404


def test_instances_given_at_construction_are_history_and_push_nothing(emulator):
    assert stream_state(emulator)["born"] == 0


# ------------------------------------------------------------------------------ acks and redelivery
def test_an_unacked_event_is_delivered_again_with_the_same_message_id(emulator):
    with connect_stream(emulator) as ws:
        approve(emulator, "PI-1")
        first = next_frame(ws)
        again = next_frame(ws)
        assert again["headers"]["messageId"] == first["headers"]["messageId"]
        assert again["data"] == first["data"]
        ack(ws, again)
        wait_until(lambda: stream_state(emulator)["acked"] == 1)
    state = stream_state(emulator)
    assert state["born"] == 1 and state["delivered"] == 1 and state["redelivered"] >= 1 and state["pending"] == 0


def test_an_event_acked_with_another_code_is_delivered_again(emulator):
    with connect_stream(emulator) as ws:
        approve(emulator, "PI-1")
        first = next_frame(ws)
        ack(ws, first, code=500)
        again = next_frame(ws)
        assert again["headers"]["messageId"] == first["headers"]["messageId"]
        ack(ws, again)
        wait_until(lambda: stream_state(emulator)["acked"] == 1)
    assert stream_state(emulator)["nacked"] == 1


def test_an_acked_event_is_not_delivered_again(emulator):
    emulator.stream.redelivery_seconds = 1.0  # room for the ack on a busy machine
    with connect_stream(emulator) as ws:
        approve(emulator, "PI-1")
        ack(ws, next_frame(ws))
        assert no_event_within(ws, 2.0)
    state = stream_state(emulator)
    assert state["acked"] == 1 and state["redelivered"] == 0 and state["pending"] == 0
    assert state["acks"][-1]["code"] == 200 and state["acks"][-1]["ua"] == "dk-tests/1.0"


def test_events_born_while_no_connection_is_open_are_delivered_on_the_next_one(emulator):
    approve(emulator, "PI-1")
    emulator.set_outcome("PI-2", "COMPLETED", "refuse")
    assert stream_state(emulator)["pending"] == 2
    with connect_stream(emulator) as ws:
        bodies = [json.loads(next_frame(ws)["data"]) for _ in range(2)]
    assert {(b["processInstanceId"], b["result"]) for b in bodies} == {("PI-1", "agree"), ("PI-2", "refuse")}


def test_an_event_unacked_when_the_socket_closed_comes_again_on_the_next_connection(emulator):
    with connect_stream(emulator) as ws:
        approve(emulator, "PI-1")
        first = next_frame(ws)
    with connect_stream(emulator) as ws:
        again = next_frame(ws)
        ack(ws, again)
    assert again["headers"]["messageId"] == first["headers"]["messageId"]
    assert again["headers"]["connectionId"] != first["headers"]["connectionId"]


def test_connections_of_an_app_share_its_events_round_robin(emulator):
    with connect_stream(emulator) as one, connect_stream(emulator) as two:
        wait_until(lambda: stream_state(emulator)["open_connections"] == 2)
        approve(emulator, "PI-1")
        approve(emulator, "PI-2")
        got = [json.loads(next_frame(ws)["data"])["processInstanceId"] for ws in (one, two)]
    assert sorted(got) == ["PI-1", "PI-2"]


def test_a_connection_without_an_event_subscription_gets_no_events(emulator):
    with connect_stream(emulator, subscriptions=[{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]) as ws:
        approve(emulator, "PI-1")
        assert no_event_within(ws, 0.5)
    assert stream_state(emulator)["pending"] == 1


def test_an_event_past_the_retention_is_dropped_and_counted_lost(emulator):
    emulator.set_clock(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
    approve(emulator, "PI-1")
    emulator.advance_clock(emulator.stream.retention_seconds + 1)
    state = stream_state(emulator)
    assert state["lost"] == 1 and state["pending"] == 0
    with connect_stream(emulator) as ws:
        assert no_event_within(ws, 0.5)


def test_stream_settings_are_live_and_shown(emulator):
    answer = requests.post(f"{emulator.base_url}/_emulator/config",
                           json={"stream_redelivery_seconds": 3, "stream_retention_seconds": 600}, timeout=10)
    config = answer.json()["config"]
    assert config["stream_redelivery_seconds"] == 3 and config["stream_retention_seconds"] == 600
    assert emulator.stream.redelivery_seconds == 3


def test_admin_disconnect_sends_the_disconnect_frame_then_closes(emulator):
    with connect_stream(emulator) as ws:
        wait_until(lambda: stream_state(emulator)["open_connections"] == 1)
        answer = requests.post(f"{emulator.base_url}/_emulator/stream/disconnect", timeout=10)
        assert answer.json() == {"ok": True, "connections": 1}
        frame = next_frame(ws, kind="SYSTEM")
        assert frame["headers"]["topic"] == "disconnect"
        ack(ws, frame, data=frame["data"])
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)
    wait_until(lambda: stream_state(emulator)["open_connections"] == 0)


def test_an_event_within_the_retention_stays_pending(emulator):
    moment = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    emulator.set_clock(moment)
    approve(emulator, "PI-1")
    emulator.advance_clock(timedelta(hours=1).total_seconds())
    state = stream_state(emulator)
    assert state["pending"] == 1 and state["lost"] == 0 and state["open_connections"] == 0


# ------------------------------------------------------------------------------ faults
def arm(emulator: DingTalkEmulator, fault: str, **options: object) -> dict:
    answer = requests.post(f"{emulator.base_url}/_emulator/stream/faults", json={"fault": fault, **options},
                           timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["fault"]


def closed_without_disconnect(ws: ClientConnection) -> bool:
    """True when the socket ends without a SYSTEM disconnect frame first."""
    try:
        while True:
            frame = json.loads(ws.recv(timeout=5))
            if frame["headers"].get("topic") == "disconnect":
                return False
    except ConnectionClosed:
        return True


def test_refused_open_calls_answer_the_armed_status_then_open_again(emulator):
    arm(emulator, "refuse_open", times=2, status=500)
    for _ in range(2):
        answer = open_call(emulator)
        assert answer.status_code == 500 and answer.json()["code"] and answer.json()["message"]
    assert open_call(emulator).status_code == 200
    arm(emulator, "refuse_open")
    assert open_call(emulator).status_code == 403
    assert stream_state(emulator)["refused_opens"] == 3


def test_a_dropped_socket_after_n_events_loses_no_event(emulator):
    emulator.stream.redelivery_seconds = 30  # no redelivery of the first event takes the fault's turn
    arm(emulator, "drop_socket", after=1)
    with connect_stream(emulator) as ws:
        approve(emulator, "PI-1")
        first = next_frame(ws)
        ack(ws, first)
        approve(emulator, "PI-2")
        assert closed_without_disconnect(ws)
    with connect_stream(emulator) as ws:
        second = next_frame(ws)
        ack(ws, second)
    assert json.loads(second["data"])["processInstanceId"] == "PI-2"
    wait_until(lambda: stream_state(emulator)["acked"] == 2)
    assert stream_state(emulator)["dropped_sockets"] == 1


def test_admin_drop_closes_every_socket_without_a_disconnect_frame(emulator):
    with connect_stream(emulator) as ws:
        wait_until(lambda: stream_state(emulator)["open_connections"] == 1)
        assert requests.post(f"{emulator.base_url}/_emulator/stream/drop", timeout=10).json()["connections"] == 1
        assert closed_without_disconnect(ws)


def test_a_duplicated_delivery_sends_the_event_twice_with_one_message_id(emulator):
    emulator.stream.redelivery_seconds = 30
    arm(emulator, "duplicate")
    with connect_stream(emulator) as ws:
        approve(emulator, "PI-1")
        first, second = next_frame(ws), next_frame(ws, timeout=1)
        ack(ws, first)
        ack(ws, second)
    assert first["headers"]["messageId"] == second["headers"]["messageId"]
    wait_until(lambda: stream_state(emulator)["acks_of_settled_events"] == 1)
    assert stream_state(emulator)["duplicated"] == 1


def test_a_delayed_delivery_arrives_after_the_delay(emulator):
    emulator.stream.redelivery_seconds = 30
    arm(emulator, "delay", seconds=0.8)
    with connect_stream(emulator) as ws:
        approve(emulator, "PI-1")
        assert no_event_within(ws, 0.5)
        frame = next_frame(ws, timeout=2)
        ack(ws, frame)
    assert json.loads(frame["data"])["processInstanceId"] == "PI-1"
    assert stream_state(emulator)["delayed"] == 1


def test_stream_faults_are_listed_cleared_and_unknown_ones_refused(emulator):
    arm(emulator, "duplicate", times=3)
    listed = requests.get(f"{emulator.base_url}/_emulator/stream/faults", timeout=10).json()
    assert [f["kind"] for f in listed["faults"]] == ["duplicate"]
    assert set(listed["known"]) == {"refuse_open", "drop_socket", "duplicate", "delay"}
    assert requests.delete(f"{emulator.base_url}/_emulator/stream/faults", timeout=10).json()["cleared"] == 1
    bad = requests.post(f"{emulator.base_url}/_emulator/stream/faults", json={"fault": "busy"}, timeout=10)
    assert bad.status_code == 400
    wrong = requests.post(f"{emulator.base_url}/_emulator/stream/faults", json={"fault": "duplicate", "status": 500},
                          timeout=10)
    assert wrong.status_code == 400
