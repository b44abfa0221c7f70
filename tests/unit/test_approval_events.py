"""Stream frames, the approval-event verdict and the trigger's filter: pure logic, no socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from airflow.sdk import Asset, AssetWatcher

from dingtalk_kingdee.events.approval import approval_verdict
from dingtalk_kingdee.events.trigger import ApprovalEventTrigger
from dingtalk_kingdee.hooks.dingtalk_config import DingTalkConnectionConfig, api_base_url_of
from dingtalk_kingdee.hooks.dingtalk_stream import ReconnectPolicy
from dingtalk_kingdee.hooks.dingtalk_stream_frames import OtherFrame as Other
from dingtalk_kingdee.hooks.dingtalk_stream_frames import StreamEvent, StreamFrameError, ack_frame, parse_frame
from dingtalk_kingdee.hooks.dingtalk_stream_frames import SystemFrame as System
from dingtalk_kingdee.provider import DINGTALK_FIELDS

PROCESS = "PROC-EXPENSE"


def event_frame(body: dict[str, Any] | str, *, message_id: str = "msg-1", event_type: str = "bpms_instance_change",
                **headers: Any) -> str:
    data = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return json.dumps({"specVersion": "1.0", "type": "EVENT", "data": data, "headers": {
        "appId": "app", "connectionId": "conn", "contentType": "application/json", "messageId": message_id,
        "time": "1709686862001", "topic": "*", "eventId": "ev-1", "eventBornTime": "1709686862000",
        "eventCorpId": "corp", "eventType": event_type, "eventUnifiedAppId": "uapp", **headers}})


def body(**fields: Any) -> dict[str, Any]:
    return {"processInstanceId": "inst-1", "processCode": PROCESS, "businessId": "202403051012000000001",
            "type": "finish", "result": "agree", "title": "张伟提交的报销", "createTime": 1709604753000,
            "finishTime": 1709686862000, **fields}


def event(**fields: Any) -> StreamEvent:
    frame = parse_frame(event_frame(body(**fields)))
    assert isinstance(frame, StreamEvent)
    return frame


# ---- frames -------------------------------------------------------------------------------------


def test_event_frame_is_read_into_its_fields() -> None:
    frame = parse_frame(event_frame(body(), message_id="m-9"))
    assert frame == StreamEvent(message_id="m-9", event_id="ev-1", event_type="bpms_instance_change",
                                born_time=1709686862000, topic="*", body=body())


def test_system_frames_keep_their_data() -> None:
    ping = json.dumps({"specVersion": "1.0", "type": "SYSTEM", "headers": {"topic": "ping", "messageId": "p-1",
                                                                           "contentType": "application/json"},
                       "data": '{"opaque": "x"}'})
    assert parse_frame(ping) == System(topic="ping", message_id="p-1", data='{"opaque": "x"}')
    bye = json.dumps({"type": "SYSTEM", "headers": {"topic": "disconnect", "messageId": "d-1"}, "data": ""})
    assert parse_frame(bye) == System(topic="disconnect", message_id="d-1", data="")


def test_callback_frames_are_other_frames() -> None:
    text = json.dumps({"type": "CALLBACK", "headers": {"topic": "/v1.0/im/bot", "messageId": "c-1"}, "data": "{}"})
    assert parse_frame(text) == Other(frame_type="CALLBACK", topic="/v1.0/im/bot", message_id="c-1")


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"type": "EVENT"}',
                                  '{"type": "EVENT", "headers": {"topic": "*"}, "data": "{}"}'])
def test_what_is_not_a_frame_is_refused(text: str) -> None:
    with pytest.raises(StreamFrameError):
        parse_frame(text)


@pytest.mark.parametrize(("data", "why"), [("not json", "not JSON"), ('["a"]', "not an object"), (None, "NoneType")])
def test_event_with_unreadable_data_is_marked_malformed(data: Any, why: str) -> None:
    frame = json.loads(event_frame({}))
    frame["data"] = data
    parsed = parse_frame(json.dumps(frame))
    assert isinstance(parsed, StreamEvent)
    assert parsed.body == {} and why in (parsed.malformed or "")
    assert parsed.message_id == "msg-1"


def test_ack_frames() -> None:
    assert json.loads(ack_frame("m-1")) == {
        "code": 200, "headers": {"contentType": "application/json", "messageId": "m-1"}, "message": "OK",
        "data": json.dumps({"status": "SUCCESS", "message": "OK"})}
    # A ping is answered with its own data.
    assert json.loads(ack_frame("p-1", '{"opaque": "x"}'))["data"] == '{"opaque": "x"}'
    assert json.loads(ack_frame("c-1", code=404, message="not implemented"))["code"] == 404


# ---- verdicts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["finish", "terminate", "delete"])
def test_settling_changes_of_the_template_fire(change: str) -> None:
    verdict = approval_verdict(event(type=change), PROCESS)
    assert verdict.payload == {
        "instance_id": "inst-1", "business_id": "202403051012000000001", "type": change, "result": "agree",
        "event_id": "ev-1", "process_code": PROCESS, "finish_time": 1709686862000}


def test_terminate_without_result_or_finish_time_has_none() -> None:
    verdict = approval_verdict(event(type="terminate", result=None, finishTime=None, businessId=None), PROCESS)
    assert verdict.payload is not None
    assert (verdict.payload["result"], verdict.payload["finish_time"], verdict.payload["business_id"]) == (
        None, None, "")


@pytest.mark.parametrize(("stream_event", "reason"), [
    (event(type="start"), "change type 'start'"),
    (event(processCode="PROC-OTHER"), "template 'PROC-OTHER'"),
    (parse_frame(event_frame(body(), event_type="user_add_org")), "event type 'user_add_org'"),
])
def test_other_events_are_skipped(stream_event: StreamEvent, reason: str) -> None:
    verdict = approval_verdict(stream_event, PROCESS)
    assert (verdict.payload, verdict.malformed, verdict.reason) == (None, False, reason)


def test_unreadable_events_are_malformed() -> None:
    assert approval_verdict(event(processInstanceId=""), PROCESS).malformed
    unreadable = parse_frame(event_frame("{broken"))
    assert isinstance(unreadable, StreamEvent)
    assert approval_verdict(unreadable, PROCESS).malformed


# ---- the trigger --------------------------------------------------------------------------------


def test_trigger_serializes_to_its_two_kwargs_and_shares_one_stream_per_app() -> None:
    trigger = ApprovalEventTrigger(dingtalk_conn_id="dingtalk_app", process_code=PROCESS)
    classpath, kwargs = trigger.serialize()
    assert classpath == "dingtalk_kingdee.events.trigger.ApprovalEventTrigger"
    assert kwargs == {"dingtalk_conn_id": "dingtalk_app", "process_code": PROCESS}
    rebuilt = ApprovalEventTrigger(**kwargs)
    other_template = ApprovalEventTrigger(dingtalk_conn_id="dingtalk_app", process_code="PROC-OTHER")
    other_app = ApprovalEventTrigger(dingtalk_conn_id="dingtalk_other", process_code=PROCESS)
    assert rebuilt.shared_stream_key() == other_template.shared_stream_key() == ("dingtalk-stream", "dingtalk_app")
    assert other_app.shared_stream_key() != trigger.shared_stream_key()
    # Airflow accepts it as an asset watcher (it must be an event trigger).
    Asset("dingtalk://approvals", watchers=[AssetWatcher(name="approvals", trigger=trigger)])


async def _stream(events: Iterable[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for stream_event in events:
        yield stream_event


def test_filter_yields_one_trigger_event_per_settled_instance_of_its_template() -> None:
    trigger = ApprovalEventTrigger(dingtalk_conn_id="dingtalk_app", process_code=PROCESS)
    raw = [event(type="start"), event(processInstanceId="a"), event(processCode="PROC-OTHER"),
           event(processInstanceId="b", type="terminate", result=None), event(processInstanceId="")]

    async def collect() -> list:
        return [e async for e in trigger.filter_shared_stream(_stream(raw))]

    fired = asyncio.run(collect())
    assert [(e.payload["instance_id"], e.payload["type"]) for e in fired] == [("a", "finish"), ("b", "terminate")]


# ---- connection and reconnecting ----------------------------------------------------------------


def test_api_host_beside_dingtalk_and_an_emulator() -> None:
    assert api_base_url_of("https://oapi.dingtalk.com") == "https://api.dingtalk.com"
    assert api_base_url_of("http://127.0.0.1:8801") == "http://127.0.0.1:8801"
    assert api_base_url_of("https://oapi.dingtalk.com", "api.example.cn") == "https://api.example.cn"
    conn = type("Conn", (), {"conn_id": "c", "host": "", "login": "k", "password": "s", "extra_dejson": {}})()
    assert DingTalkConnectionConfig.from_connection(conn).api_base_url == "https://api.dingtalk.com"
    # The connection form's field is the extra the config reads.
    assert "api_host" in DINGTALK_FIELDS
    conn.extra_dejson = {"api_host": "http://127.0.0.1:9"}
    assert DingTalkConnectionConfig.from_connection(conn).api_base_url == "http://127.0.0.1:9"


def test_reconnect_waits_double_from_one_second_to_the_cap_plus_jitter() -> None:
    policy = ReconnectPolicy()
    assert [policy.delay(n, rng=lambda: 0.0) for n in (1, 2, 3, 6, 7, 20)] == [1, 2, 4, 32, 60, 60]
    assert policy.delay(3, rng=lambda: 1.0) == pytest.approx(4 * 1.2)
    assert policy.refused_delay(rng=lambda: 0.0) == 60
    assert 60 <= policy.refused_delay() <= 72
