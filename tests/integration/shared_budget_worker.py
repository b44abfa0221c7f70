"""One extract of one scheme in a process of its own, for the shared DingTalk budget test.

Started by tests/integration/test_shared_rate_limit.py with the DingTalk connection and (or not)
``DK_RATE_LIMIT_REDIS_URL`` in its environment. It prints ``ready`` once imported and connected, waits
for a line on stdin so that both processes start calling at the same moment, runs the extract and
prints its counts as JSON.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dingtalk_kingdee import pipeline, staging
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook
from dingtalk_kingdee.scheme import load_scheme

ROOT = Path(__file__).resolve().parents[2]


def main(staging_url: str, scheme_id: str, process_code: str) -> None:
    base = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")
    scheme = base.model_copy(update={"id": scheme_id, "source": base.source.model_copy(
        update={"process_code": process_code})})
    engine = staging.connect(staging_url)
    now = datetime.now(UTC)
    run = pipeline.Run(run_id=f"manual__{scheme_id}", window_start=now - timedelta(days=2),
                       window_end=now - timedelta(minutes=5))
    hook = DingTalkHook("dingtalk_default")
    _ = hook.config  # read the connection before the start line
    print("ready", flush=True)
    sys.stdin.readline()
    counts = pipeline.extract(scheme, hook, engine, run)
    print(json.dumps(counts, default=str), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
