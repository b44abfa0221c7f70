"""DingTalkStreamClient against the DingTalk emulator's Stream mode over real HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
from dk_emulators.dingtalk import DingTalkEmulator

from dingtalk_kingdee.hooks.dingtalk_stream import DingTalkStreamClient, ReconnectPolicy, StreamDelivery
from tests.fixtures.dingtalk_stream import (
    eventually,
    next_of,
    stream_admin,
    stream_fault,
    stream_settings,
    stream_state,
    submitted,
)

PROCESS = "PROC-STREAM"
FAST = ReconnectPolicy(base=0.05, cap=0.2)


def client(conn_id: str, **options) -> DingTalkStreamClient:
    return DingTalkStreamClient(conn_id, policy=FAST, rng=lambda: 0.0, **options)


async def approval(deliveries, instance_id: str, change: str) -> StreamDelivery:
    """The next delivery of ``change`` for ``instance_id`` (the start event of a new instance comes first)."""
    while True:
        delivery = await next_of(deliveries)
        if (delivery.event.body.get("processInstanceId"), delivery.event.body.get("type")) == (instance_id, change):
            return delivery


async def first_start(emulator: DingTalkEmulator, conn_id: str, instance_id: str):
    """A client, its deliveries, and the delivery of the start event of a new instance ``instance_id``."""
    stream = client(conn_id)
    deliveries = stream.deliveries()
    emulator.add_instances([submitted(instance_id, PROCESS)])
    return stream, deliveries, await approval(deliveries, instance_id, "start")


def test_events_arrive_typed_pings_are_answered_and_acks_settle_them(dingtalk_emulator: DingTalkEmulator,
                                                                     dingtalk_conn_id: str) -> None:
    stream_settings(dingtalk_emulator, stream_ping_seconds=0.2, stream_redelivery_seconds=30)

    async def scenario() -> None:
        stream, deliveries, started = await first_start(dingtalk_emulator, dingtalk_conn_id, "PI-1")
        dingtalk_emulator.set_outcome("PI-1", "COMPLETED", "agree")
        finished = await approval(deliveries, "PI-1", "finish")
        event = finished.event
        assert (event.event_type, event.body["processCode"], event.body["result"]) == (
            "bpms_instance_change", PROCESS, "agree")
        assert event.event_id and event.born_time and event.message_id != started.event.message_id
        assert await stream.ack(started) and await stream.ack(finished)
        await eventually(lambda: stream_state(dingtalk_emulator)["acked"] == 2, what="two acks")
        await eventually(lambda: stream_state(dingtalk_emulator)["pongs"] >= 2, what="pings answered")
        state = stream_state(dingtalk_emulator)
        assert state["pending"] == 0 and state["redelivered"] == 0
        assert state["connections"][0]["ua"].startswith("dingtalk-kingdee-stream/")
        await deliveries.aclose()
        await eventually(lambda: stream_state(dingtalk_emulator)["open_connections"] == 0, what="socket closed")

    asyncio.run(scenario())


def test_an_event_not_acked_comes_again_with_the_same_message_id(dingtalk_emulator: DingTalkEmulator,
                                                                  dingtalk_conn_id: str) -> None:
    stream_settings(dingtalk_emulator, stream_redelivery_seconds=0.3)

    async def scenario() -> None:
        stream, deliveries, first = await first_start(dingtalk_emulator, dingtalk_conn_id, "PI-2")
        again = await approval(deliveries, "PI-2", "start")
        assert again.event.message_id == first.event.message_id
        assert again.event.event_id == first.event.event_id
        assert await stream.ack(again)
        await eventually(lambda: stream_state(dingtalk_emulator)["pending"] == 0, what="settled")
        redelivered = stream_state(dingtalk_emulator)["redelivered"]
        await asyncio.sleep(0.6)  # two redelivery periods: nothing comes any more
        assert (stream_state(dingtalk_emulator)["acked"], stream_state(dingtalk_emulator)["redelivered"]) == (
            1, redelivered)
        await deliveries.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("action", ["drop", "disconnect"])
def test_the_client_connects_again_after_the_server_closes_the_socket(
        dingtalk_emulator: DingTalkEmulator, dingtalk_conn_id: str, action: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dingtalk_kingdee")
    stream_settings(dingtalk_emulator, stream_redelivery_seconds=0.5)

    async def scenario() -> None:
        stream, deliveries, on_first_socket = await first_start(dingtalk_emulator, dingtalk_conn_id, "PI-3")
        stream_admin(dingtalk_emulator, action)
        dingtalk_emulator.set_outcome("PI-3", "TERMINATED")
        # The event born while the socket closed comes on the next one; so does the unacked start.
        terminated = await approval(deliveries, "PI-3", "terminate")
        assert terminated.socket.number == 2 and stream.connections_opened == 2
        # The ack of a delivery whose socket has closed is dropped (DingTalk delivers it again).
        assert not await stream.ack(on_first_socket)
        again = await approval(deliveries, "PI-3", "start")
        assert again.event.message_id == on_first_socket.event.message_id and again.socket.number == 2
        assert await stream.ack(again) and await stream.ack(terminated)
        await eventually(lambda: stream_state(dingtalk_emulator)["pending"] == 0, what="settled")
        await deliveries.aclose()

    asyncio.run(scenario())
    assert "ack of message" in caplog.text and "connection 1 has closed" in caplog.text
    if action == "disconnect":
        assert "the server asked to disconnect" in caplog.text


def test_refused_credentials_are_logged_by_connection_id_and_retried_at_the_cap(
        dingtalk_emulator: DingTalkEmulator, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dingtalk_kingdee")
    wrong_secret = "not-the-app-secret-4711"
    connection = {**dingtalk_emulator.connection(), "password": wrong_secret}
    monkeypatch.setenv("AIRFLOW_CONN_DINGTALK_STREAM", json.dumps(connection))

    async def scenario() -> None:
        stream = client("dingtalk_stream")
        deliveries = stream.deliveries()
        waiting = asyncio.ensure_future(next_of(deliveries, timeout=30))
        await eventually(lambda: caplog.text.count("refused") >= 2, what="two refusals")
        assert stream.connections_opened == 0
        # The connection is read again at every try: once corrected, the next try connects.
        monkeypatch.setenv("AIRFLOW_CONN_DINGTALK_STREAM", json.dumps(dingtalk_emulator.connection()))
        dingtalk_emulator.add_instances([submitted("PI-4", PROCESS)])
        delivery = await waiting
        assert delivery.event.body["processInstanceId"] == "PI-4"
        await deliveries.aclose()

    asyncio.run(scenario())
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert all(r.levelno == logging.ERROR for r in refusals)
    assert "'dingtalk_stream' refused: HTTP 401" in refusals[0].getMessage()
    assert "trying again in 0 s" in refusals[0].getMessage()  # the cap (0.2 s) without jitter
    assert wrong_secret not in caplog.text


@pytest.mark.parametrize(("status", "logged", "level"), [
    (503, "could not be opened (StreamOpenFailed: POST", logging.WARNING), (403, "refused: HTTP 403", logging.ERROR)])
def test_refused_opens_are_tried_again(dingtalk_emulator: DingTalkEmulator, dingtalk_conn_id: str, status: int,
                                       logged: str, level: int, caplog: pytest.LogCaptureFixture) -> None:
    """A passing refusal (5xx) waits the doubling back-off; one of the credentials (4xx) waits the cap."""
    caplog.set_level(logging.INFO, logger="dingtalk_kingdee")
    stream_fault(dingtalk_emulator, "refuse_open", status=status, times=2)

    async def scenario() -> None:
        stream, deliveries, _ = await first_start(dingtalk_emulator, dingtalk_conn_id, "PI-5")
        assert stream.connections_opened == 1
        await deliveries.aclose()

    asyncio.run(scenario())
    refusals = [r for r in caplog.records if logged in r.getMessage()]
    assert len(refusals) == 2 and {r.levelno for r in refusals} == {level}
    assert stream_state(dingtalk_emulator)["refused_opens"] == 2


def test_an_unreachable_host_is_tried_again_with_doubling_waits_up_to_the_cap(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dingtalk_kingdee")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_DINGTALK_NOWHERE", json.dumps({
        "conn_type": "dingtalk", "host": f"http://127.0.0.1:{port}", "login": "key", "password": "secret-0815"}))

    async def scenario() -> None:
        deliveries = client("dingtalk_nowhere").deliveries()
        waiting = asyncio.ensure_future(next_of(deliveries, timeout=30))
        await eventually(lambda: caplog.text.count("could not be opened") >= 5, what="five tries")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
    waits = [r.args[-1] for r in caplog.records if "could not be opened" in r.getMessage()]
    assert waits[:5] == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert "secret-0815" not in caplog.text


def test_a_missing_connection_is_logged_by_its_id_and_tried_again_at_the_cap(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dingtalk_kingdee")

    async def scenario() -> None:
        waiting = asyncio.ensure_future(next_of(client("dingtalk_not_defined").deliveries(), timeout=30))
        await eventually(lambda: caplog.text.count("connection unusable") >= 2, what="two tries")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
    first = next(r for r in caplog.records if "connection unusable" in r.getMessage())
    assert first.levelno == logging.ERROR and "'dingtalk_not_defined' refused" in first.getMessage()
