"""The official DingTalk Stream SDK (``dingtalk-stream``), unchanged, in a process of its own.

Started by tests/integration/test_dingtalk_stream_sdk_interop.py with ``DINGTALK_OPENAPI_ENDPOINT``
pointing at the emulator: the SDK reads it once, when ``dingtalk_stream`` is imported. Every event its
handler receives is printed as one JSON line (headers and body) and acked the SDK's way (200, "OK").
"""

from __future__ import annotations

import json
import sys

import dingtalk_stream
from dingtalk_stream import AckMessage, EventMessage


class PrintingHandler(dingtalk_stream.EventHandler):
    async def process(self, event: EventMessage) -> tuple[int, str]:
        print(json.dumps({"event_type": event.headers.event_type, "message_id": event.headers.message_id,
                          "event_id": event.headers.event_id, "data": event.data}, ensure_ascii=False),
              flush=True)
        return AckMessage.STATUS_OK, "OK"


def main(client_id: str, client_secret: str) -> None:
    client = dingtalk_stream.DingTalkStreamClient(dingtalk_stream.Credential(client_id, client_secret))
    client.register_all_event_handler(PrintingHandler())
    client.start_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
