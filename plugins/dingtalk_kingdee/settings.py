"""Every setting of the project, read from the environment with a documented default.

No default depends on where this module lies (a checkout's ``plugins/`` or an installed wheel's
``site-packages``); the two folders the project reads and writes follow Airflow's own layout:

- ``DK_SCHEMES_DIR``, the integration schemes (one DAG per ``<scheme>.yaml``): by default
  ``include/schemes`` beside Airflow's DAGs folder (``[core] dags_folder``, e.g. from
  ``AIRFLOW__CORE__DAGS_FOLDER``), the usual Airflow project layout of ``dags/``, ``plugins/`` and
  ``include/`` side by side.
- ``DK_VAR_DIR``, local state (the default SQLite staging file): by default ``dingtalk_kingdee/`` under
  ``AIRFLOW_HOME`` (``~/airflow`` when unset, as for Airflow itself).

The embedded default needs nothing configured: staging lives in a SQLite file under the var folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from airflow.sdk import conf


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def default_schemes_dir() -> Path:
    """``include/schemes`` beside Airflow's DAGs folder."""
    dags_folder = Path(conf.get("core", "dags_folder")).expanduser()
    return dags_folder.parent / "include" / "schemes"


def default_var_dir() -> Path:
    """``dingtalk_kingdee/`` under AIRFLOW_HOME, whose default is Airflow's (``~/airflow``)."""
    return Path(_env("AIRFLOW_HOME", "~/airflow")).expanduser() / "dingtalk_kingdee"


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
    sending_lease_seconds: float
    rate_limit_redis_url: str
    staging_retention_days: int


def get_settings() -> Settings:
    """Read the settings now (not at import), so tests and tasks see the current environment."""
    var_dir = Path(_env("DK_VAR_DIR", str(default_var_dir())))
    return Settings(
        # SQLAlchemy URL of the staging database, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/dk
        staging_database_url=_env("STAGING_DATABASE_URL", f"sqlite:///{var_dir / 'staging.db'}"),
        schemes_dir=Path(_env("DK_SCHEMES_DIR", str(default_schemes_dir()))),
        dingtalk_conn_id=_env("DK_DINGTALK_CONN_ID", "dingtalk_default"),
        kingdee_conn_id=_env("DK_KINGDEE_CONN_ID", "kingdee_default"),
        # DingTalk group robot (dingding provider) for failure alerts; alerts are off when absent.
        robot_conn_id=_env("DK_ROBOT_CONN_ID", "dingding_default"),
        var_dir=var_dir,
        # Task retry policy (exponential backoff from this first delay, capped at 30 minutes).
        task_retries=int(_env("DK_TASK_RETRIES", "3")),
        retry_delay_seconds=int(_env("DK_RETRY_DELAY_SECONDS", "120")),
        # How long a send (a BatchSave, a DingTalk comment) may still take effect after it left: a bill
        # sent this long ago (on the staging database's clock) and not found in Kingdee is sent again.
        # Keep it far above the Kingdee read timeout and the longest commit the server may take.
        sending_lease_seconds=float(_env("DK_SENDING_LEASE_SECONDS", "900")),
        # Redis shared by every worker for the DingTalk rate limiter (one 20 calls/s budget per app and
        # API across processes); empty = each process paces alone. Not the Celery broker by default.
        rate_limit_redis_url=_env("DK_RATE_LIMIT_REDIS_URL", ""),
        # The report step drops detail rows and raw answers of claims whose bill was loaded (and comment
        # settled) more than this many days ago; 0 = keep everything.
        staging_retention_days=int(_env("DK_STAGING_RETENTION_DAYS", "0")),
    )
