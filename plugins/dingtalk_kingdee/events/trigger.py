"""``ApprovalEventTrigger``: settled approvals of one template, as asset events (event-driven runs).

Every scheme on one DingTalk app shares one Stream socket (``shared_stream_key``) in ack mode
(``create_shared_stream_producer``): DingTalk's event is acked only after Airflow persisted the
asset events derived from it, so a triggerer that dies in between gets it again. Each trigger keeps
the ``bpms_instance_change`` events of its own template that settle an instance (``approval``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome, reject_shared_stream_event

from dingtalk_kingdee.events.approval import approval_verdict
from dingtalk_kingdee.events.producer import StreamProducer, describe
from dingtalk_kingdee.hooks.dingtalk_stream import DingTalkStreamClient
from dingtalk_kingdee.hooks.dingtalk_stream_frames import StreamEvent

STREAM_KEY_PREFIX = "dingtalk-stream"


class ApprovalEventTrigger(BaseEventTrigger):
    """Fires once per ``finish`` / ``terminate`` / ``delete`` event of template ``process_code``
    received on the Stream of the app behind ``dingtalk_conn_id``. Payload: ``instance_id``,
    ``business_id``, ``type``, ``result``, ``event_id``, ``process_code``, ``finish_time`` (epoch ms)."""

    def __init__(self, dingtalk_conn_id: str, process_code: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dingtalk_conn_id = dingtalk_conn_id
        self.process_code = process_code

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"dingtalk_conn_id": self.dingtalk_conn_id, "process_code": self.process_code})

    def shared_stream_key(self) -> Hashable:
        # One socket per DingTalk app, shared by every scheme (template) on it.
        return (STREAM_KEY_PREFIX, self.dingtalk_conn_id)

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> StreamProducer:
        return StreamProducer(DingTalkStreamClient(kwargs["dingtalk_conn_id"]))

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for event in shared_stream:
            trigger_event = self._trigger_event(event)
            if trigger_event is not None:
                yield trigger_event

    def _trigger_event(self, event: StreamEvent) -> TriggerEvent | None:
        verdict = approval_verdict(event, self.process_code)
        if verdict.payload is not None:
            self.log.info("DingTalk approval event for template %s: %s", self.process_code, describe(event))
            return TriggerEvent(verdict.payload)
        if verdict.malformed:
            # Unreadable now, unreadable when delivered again: refused for good (the daily sweep
            # still finds the instance by listing).
            self.log.error("DingTalk event refused, unreadable for template %s (%s): %s", self.process_code,
                           verdict.reason, describe(event))
            reject_shared_stream_event()
        else:
            self.log.debug("DingTalk event skipped for template %s (%s): %s", self.process_code, verdict.reason,
                           describe(event))
        return None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The trigger alone on its own socket, should the triggerer ever run it unshared (it does so
        only when ``shared_stream_key`` raised). Without Airflow's persistence confirmation an event is
        acked once the triggerer took its trigger event (when the filter asks for the next one): a
        triggerer dying between taking and persisting loses it, and the daily sweep finds the claim."""
        producer = self.create_shared_stream_producer(self.serialize()[1])

        async def taken_events() -> AsyncIterator[StreamEvent]:
            async for event, message_id in producer.open_stream():
                yield event
                await producer.advance([AdvanceItem(message_id, AdvanceOutcome(acked=1, failed=0))])

        try:
            async for trigger_event in self.filter_shared_stream(taken_events()):
                yield trigger_event
        finally:
            await producer.aclose()
