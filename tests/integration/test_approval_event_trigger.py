"""ApprovalEventTrigger driven through Airflow's own SharedStreamManager (ack mode) against the DingTalk
emulator's Stream mode: the persistence confirmation the triggerer's supervisor would send is given by
the test, so what is acked when can be watched on the emulator."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from airflow.triggers.shared_stream import AckTimeout, SharedStreamManager
from dk_emulators.dingtalk import DingTalkEmulator

from dingtalk_kingdee.events.trigger import ApprovalEventTrigger
from tests.fixtures.dingtalk_stream import (
    eventually,
    next_of,
    stream_admin,
    stream_fault,
    stream_settings,
    stream_state,
    submitted,
)

PROC_A = "PROC-A"
PROC_B = "PROC-B"
REDELIVERY = 0.3


class Subscriber:
    """One trigger as the triggerer runs it in a shared-stream group: its filter's events are bound
    to the raw event they came from (``bind_pending_event``) and kept with their persist seq."""

    def __init__(self, manager: SharedStreamManager, trigger_id: int, trigger: ApprovalEventTrigger) -> None:
        self.manager = manager
        self.trigger_id = trigger_id
        self.trigger = trigger
        self.key = trigger.shared_stream_key()
        self.fired: list[tuple[dict[str, Any], int | None]] = []
        self.task = asyncio.ensure_future(self._consume())

    async def _consume(self) -> None:
        stream = self.manager.subscribe(trigger_id=self.trigger_id, trigger=self.trigger, key=self.key)
        try:
            async for event in self.trigger.filter_shared_stream(stream):
                seq = self.manager.bind_pending_event(trigger_id=self.trigger_id, key=self.key)
                self.fired.append((event.payload, seq))
        finally:
            await self.manager.unsubscribe(self.trigger_id, self.key)

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def fires_again_then_acked(manager: SharedStreamManager, trigger_id: int, first: Subscriber,
                                 emulator: DingTalkEmulator) -> None:
    """The trigger of ``first`` subscribed anew gets the same event again, which is acked once persisted."""
    again = Subscriber(manager, trigger_id, first.trigger)
    await eventually(lambda: len(again.fired) == 1, what="fired again")
    assert again.fired[0][0] == first.fired[0][0]  # the same event (its event_id included)
    manager.confirm_persisted([again.fired[0][1]])
    await eventually(lambda: pending(emulator) == 0, what="acked")
    await again.stop()


def watching(conn_id: str, process_code: str = PROC_A, *, trigger_id: int = 1,
             manager: SharedStreamManager | None = None, ack_timeout: float = 60) -> Subscriber:
    """A trigger of ``process_code`` subscribed in ``manager`` (default: a new one, a fresh triggerer)."""
    return Subscriber(manager or SharedStreamManager(ack_timeout=ack_timeout), trigger_id,
                      ApprovalEventTrigger(dingtalk_conn_id=conn_id, process_code=process_code))


def pending(emulator: DingTalkEmulator) -> int:
    return stream_state(emulator)["pending"]


@pytest.fixture
def emulator(dingtalk_emulator: DingTalkEmulator) -> DingTalkEmulator:
    stream_settings(dingtalk_emulator, stream_redelivery_seconds=REDELIVERY)
    return dingtalk_emulator


def test_an_event_is_acked_only_once_its_asset_event_is_persisted(
        emulator: DingTalkEmulator, dingtalk_conn_id: str, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        a = watching(dingtalk_conn_id)
        manager = a.manager
        b = watching(dingtalk_conn_id, PROC_B, trigger_id=2, manager=manager)
        await eventually(lambda: stream_state(emulator)["open_connections"] == 1, what="one shared socket")
        # Start events (no business of either trigger) are acked without anything to persist.
        emulator.add_instances([submitted("A-1", PROC_A), submitted("B-1", PROC_B)])
        await eventually(lambda: stream_state(emulator)["acked"] == 2 and pending(emulator) == 0, what="starts acked")
        emulator.set_outcome("A-1", "COMPLETED", "agree")
        await eventually(lambda: len(a.fired) == 1, what="A fired")
        payload, seq = a.fired[0]
        assert seq is not None
        assert {k: payload[k] for k in ("instance_id", "business_id", "type", "result", "process_code")} == {
            "instance_id": "A-1", "business_id": "B-A-1", "type": "finish", "result": "agree",
            "process_code": PROC_A}
        assert payload["event_id"] and isinstance(payload["finish_time"], int)
        # Not persisted yet: not acked; DingTalk delivers it again, and the copy is not fired twice.
        await eventually(lambda: stream_state(emulator)["redelivered"] >= 2, what="redeliveries")
        assert pending(emulator) == 1 and len(a.fired) == 1 and b.fired == []
        manager.confirm_persisted([seq])
        await eventually(lambda: pending(emulator) == 0, what="acked after persistence")
        assert stream_state(emulator)["acked"] == 3
        # The other template's trigger fires for its own instance only.
        emulator.set_outcome("B-1", "TERMINATED")
        await eventually(lambda: len(b.fired) == 1, what="B fired")
        assert (b.fired[0][0]["instance_id"], b.fired[0][0]["type"], b.fired[0][0]["result"]) == (
            "B-1", "terminate", None)
        manager.confirm_persisted([b.fired[0][1]])
        await eventually(lambda: pending(emulator) == 0, what="B's event acked")
        # A deleted instance fires too (its claim is closed unread).
        emulator.delete_instance("A-1")
        await eventually(lambda: len(a.fired) == 2, what="A's delete fired")
        assert (a.fired[1][0]["instance_id"], a.fired[1][0]["type"]) == ("A-1", "delete")
        manager.confirm_persisted([a.fired[1][1]])
        await eventually(lambda: pending(emulator) == 0, what="the delete acked")
        assert len(b.fired) == 1
        await a.stop()
        await b.stop()
        await eventually(lambda: stream_state(emulator)["open_connections"] == 0, what="socket closed")

    asyncio.run(scenario())
    logged = caplog.text + capsys.readouterr().out  # the trigger's own log goes through Airflow's structlog
    assert "DingTalk event received: message" in logged and "instance 'A-1' type 'finish'" in logged
    assert "DingTalk approval event for template PROC-A" in logged
    assert emulator.app_secret not in logged


def test_an_event_delivered_twice_fires_once_and_is_acked_once(emulator: DingTalkEmulator,
                                                                dingtalk_conn_id: str) -> None:
    stream_settings(emulator, stream_redelivery_seconds=30)  # only the duplicate comes twice

    async def scenario() -> None:
        a = watching(dingtalk_conn_id)
        emulator.add_instances([submitted("A-5", PROC_A)])
        await eventually(lambda: stream_state(emulator)["acked"] == 1, what="start acked")
        stream_fault(emulator, "duplicate", times=1)
        emulator.set_outcome("A-5", "TERMINATED")
        await eventually(lambda: stream_state(emulator)["duplicated"] == 1 and len(a.fired) == 1, what="fired")
        a.manager.confirm_persisted([a.fired[0][1]])
        await eventually(lambda: pending(emulator) == 0, what="acked")
        await asyncio.sleep(0.3)
        assert len(a.fired) == 1 and a.fired[0][0]["type"] == "terminate"
        assert stream_state(emulator)["acked"] == 2 and stream_state(emulator)["acks_of_settled_events"] == 0
        await a.stop()

    asyncio.run(scenario())


def test_an_ack_lost_with_its_socket_is_given_again_without_a_second_asset_event(
        emulator: DingTalkEmulator, dingtalk_conn_id: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dingtalk_kingdee")
    # Well beyond the client's first reconnect (1-1.2 s), even on a busy machine: the copy comes on the
    # new socket after the ack was lost.
    stream_settings(emulator, stream_redelivery_seconds=5)

    async def scenario() -> None:
        a = watching(dingtalk_conn_id)
        emulator.add_instances([submitted("A-6", PROC_A)])
        await eventually(lambda: stream_state(emulator)["acked"] == 1, what="start acked")
        emulator.set_outcome("A-6", "COMPLETED", "agree")
        await eventually(lambda: len(a.fired) == 1, what="fired")
        stream_admin(emulator, "drop")
        await eventually(lambda: stream_state(emulator)["connections_opened"] == 2
                         and stream_state(emulator)["open_connections"] == 1, what="second socket")
        a.manager.confirm_persisted([a.fired[0][1]])  # the ack goes to the first socket: lost
        await eventually(lambda: pending(emulator) == 0, what="acked on the second socket")
        assert len(a.fired) == 1
        await a.stop()

    asyncio.run(scenario())
    assert "connection 1 has closed" in caplog.text
    assert "delivered again after Airflow settled it, acked again" in caplog.text


def test_an_unreadable_event_of_the_template_is_refused_and_acked(emulator: DingTalkEmulator,
                                                                  dingtalk_conn_id: str) -> None:
    async def scenario() -> None:
        a = watching(dingtalk_conn_id)
        emulator.stream.publish("bpms_instance_change", {"processCode": PROC_A, "type": "finish"})
        await eventually(lambda: stream_state(emulator)["acked"] == 1, what="refused event acked")
        assert a.fired == [] and pending(emulator) == 0
        await a.stop()

    asyncio.run(scenario())


def test_an_event_whose_persistence_is_not_confirmed_is_left_to_redelivery(emulator: DingTalkEmulator,
                                                                           dingtalk_conn_id: str) -> None:
    async def scenario() -> None:
        first = watching(dingtalk_conn_id, ack_timeout=1.0)
        emulator.add_instances([{**submitted("A-2", PROC_A), "status": "COMPLETED", "result": "refuse",
                                 "finish_time": "2026-11-30 10:00:00"}])
        await eventually(lambda: len(first.fired) == 1, what="fired")
        # No confirmation: the ack timeout fails the trigger, and the event is not acked.
        with pytest.raises(AckTimeout):
            await asyncio.wait_for(first.task, 10)
        assert pending(emulator) == 1
        # The trigger run again (the triggerer does so) gets the same event again, on a new socket.
        await fires_again_then_acked(first.manager, 2, first, emulator)

    asyncio.run(scenario())


def test_a_triggerer_restart_before_persistence_gets_the_event_again(emulator: DingTalkEmulator,
                                                                      dingtalk_conn_id: str) -> None:
    async def scenario() -> None:
        first = watching(dingtalk_conn_id)
        emulator.add_instances([submitted("A-3", PROC_A)])
        emulator.set_outcome("A-3", "COMPLETED", "agree")
        await eventually(lambda: len(first.fired) == 1, what="fired")
        await first.stop()
        await first.manager.stop_all()
        await fires_again_then_acked(SharedStreamManager(ack_timeout=60), 1, first, emulator)

    asyncio.run(scenario())


def test_run_alone_acks_an_event_once_the_next_one_is_asked_for(emulator: DingTalkEmulator,
                                                                 dingtalk_conn_id: str) -> None:
    async def scenario() -> None:
        events = ApprovalEventTrigger(dingtalk_conn_id=dingtalk_conn_id, process_code=PROC_A).run()
        first = asyncio.ensure_future(next_of(events, timeout=30))
        await eventually(lambda: stream_state(emulator)["open_connections"] == 1, what="socket open")
        emulator.add_instances([submitted("A-4", PROC_A)])
        # The start is no business of the trigger: acked as soon as the filter moved on past it.
        await eventually(lambda: stream_state(emulator)["acked"] == 1, what="start acked")
        emulator.set_outcome("A-4", "TERMINATED")
        fired = await first
        assert (fired.payload["instance_id"], fired.payload["type"]) == ("A-4", "terminate")
        await asyncio.sleep(2 * REDELIVERY)
        assert pending(emulator) == 1  # taken by the triggerer, not yet asked past: not acked
        asking = asyncio.ensure_future(next_of(events, timeout=30))
        await eventually(lambda: pending(emulator) == 0, what="acked once the next event is asked for")
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        await events.aclose()

    asyncio.run(scenario())
