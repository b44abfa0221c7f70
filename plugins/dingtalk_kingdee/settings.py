"""Every setting of the project, read from the environment with a documented default.

The embedded default needs nothing configured: staging lives in a SQLite file under ``var/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    staging_database_url: str
    schemes_dir: Path
    dingtalk_conn_id: str
    kingdee_conn_id: str
    robot_conn_id: str
    var_dir: Path
    task_retries: int
    retry_delay_seconds: int


def get_settings() -> Settings:
    """Read the settings now (not at import), so tests and tasks see the current environment."""
    var_dir = Path(_env("DK_VAR_DIR", str(PROJECT_ROOT / "var")))
    return Settings(
        # SQLAlchemy URL of the staging database, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/dk
        staging_database_url=_env("STAGING_DATABASE_URL", f"sqlite:///{var_dir / 'staging.db'}"),
        schemes_dir=Path(_env("DK_SCHEMES_DIR", str(PROJECT_ROOT / "include" / "schemes"))),
        dingtalk_conn_id=_env("DK_DINGTALK_CONN_ID", "dingtalk_default"),
        kingdee_conn_id=_env("DK_KINGDEE_CONN_ID", "kingdee_default"),
        # DingTalk group robot (dingding provider) for failure alerts; alerts are off when absent.
        robot_conn_id=_env("DK_ROBOT_CONN_ID", "dingding_default"),
        var_dir=var_dir,
        # Task retry policy (exponential backoff from this first delay, capped at 30 minutes).
        task_retries=int(_env("DK_TASK_RETRIES", "3")),
        retry_delay_seconds=int(_env("DK_RETRY_DELAY_SECONDS", "120")),
    )
