"""``StreamProducer``: the DingTalk Stream of one app as the broker of an ack-mode shared stream.

Airflow's triggerer drives ``open_stream`` once per shared-stream group (one socket per app, every
scheme of the app subscribed) and calls ``advance`` only once the trigger events derived from a
raw event are persisted in the metadata database: that is where DingTalk gets its 200 ack. An event
whose outcome failed (ack timeout, a subscriber overflowed, no subscriber) is left unacked and
DingTalk delivers it again with the same message id; a rejected (unreadable) event is acked, since
delivering it again cannot make it readable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer

from dingtalk_kingdee.hooks.dingtalk_stream import DingTalkStreamClient, StreamDelivery
from dingtalk_kingdee.hooks.dingtalk_stream_frames import StreamEvent

# As long as DingTalk's own SDK remembers an answered message id. A delivery of an id settled this
# recently (Airflow persisted or refused it) is acked at once instead of firing twice: it crossed our
# ack on the wire, or our ack was lost with its socket.
SETTLED_MEMORY_SECONDS = 300.0

log = logging.getLogger(__name__)


def describe(event: StreamEvent) -> str:
    """An event for a log line: message id, type, template, instance, change (never a secret)."""
    body = event.body
    return (f"message {event.message_id} {event.event_type or 'untyped'} template {body.get('processCode')!r} "
            f"instance {body.get('processInstanceId')!r} type {body.get('type')!r}")


class StreamProducer(SharedStreamProducer):
    """Yields ``(StreamEvent, message id)`` per delivered event, forever; acks in ``advance``."""

    def __init__(self, client: DingTalkStreamClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock
        # Yielded, not yet advanced: message id -> its latest delivery (the socket to ack it on).
        self._in_flight: dict[str, StreamDelivery] = {}
        # Settled in Airflow (acked, or the ack lost with its socket): message id -> when (in time order).
        self._settled: dict[str, float] = {}

    async def open_stream(self) -> AsyncIterator[tuple[StreamEvent, str]]:
        async for delivery in self.client.deliveries():
            event = delivery.event
            message_id = event.message_id
            if message_id in self._in_flight:
                # Delivered again before Airflow persisted the first copy (a slow confirmation, or a
                # new socket): one copy is in the stream already; its ack goes on the newest socket.
                self._in_flight[message_id] = delivery
                log.info("DingTalk event delivered again while in progress, not repeated: %s", describe(event))
                continue
            if self._recently_settled(message_id):
                log.info("DingTalk event delivered again after Airflow settled it, acked again: %s", describe(event))
                await self.client.ack(delivery)
                continue
            self._in_flight[message_id] = delivery
            log.info("DingTalk event received: %s", describe(event))
            yield event, message_id

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        for item in batch:
            delivery = self._in_flight.pop(item.broker_payload, None)
            if delivery is None:
                continue
            outcome = item.outcome
            if outcome.is_clean or outcome.rejected:
                self._remember_settled(delivery.event.message_id)
                if await self.client.ack(delivery):
                    log.info("DingTalk event acked (%d taken, %d rejected): %s", outcome.acked, outcome.rejected,
                             describe(delivery.event))
            else:
                log.warning("DingTalk event left unacked (%d taken, %d failed): DingTalk will deliver it again: %s",
                            outcome.acked, outcome.failed, describe(delivery.event))

    async def aclose(self) -> None:
        await self.client.aclose()

    def _recently_settled(self, message_id: str) -> bool:
        settled_at = self._settled.get(message_id)
        return settled_at is not None and self._clock() - settled_at < SETTLED_MEMORY_SECONDS

    def _remember_settled(self, message_id: str) -> None:
        now = self._clock()
        for old_id, settled_at in list(self._settled.items()):
            if now - settled_at < SETTLED_MEMORY_SECONDS:
                break
            del self._settled[old_id]
        self._settled.pop(message_id, None)  # re-inserted last: the dict stays in time order
        self._settled[message_id] = now
