"""One pipeline step in its own process, for the fault matrix to SIGKILL:
``python -m tests.reliability.worker <step> <scheme.yaml> <run_id> <window_start> <window_end>``.

Connections and staging come from the environment (AIRFLOW_CONN_*, STAGING_DATABASE_URL), as in a task.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

from dingtalk_kingdee import pipeline, staging
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook
from dingtalk_kingdee.hooks.kingdee import KingdeeHook
from dingtalk_kingdee.scheme import load_scheme


def main(step: str, scheme_file: str, run_id: str, start: str, end: str) -> None:
    scheme = load_scheme(scheme_file)
    engine = staging.connect(os.environ["STAGING_DATABASE_URL"])
    run = pipeline.Run(run_id=run_id, window_start=datetime.fromisoformat(start),
                       window_end=datetime.fromisoformat(end))
    if step == "load":
        pipeline.load(scheme, KingdeeHook("kingdee_default"), engine, run)
    elif step == "write_back":
        pipeline.write_back(scheme, DingTalkHook("dingtalk_default"), engine, run)
    else:
        raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
