"""The DingTalk connection as the hook reads it once, and how long the hook keeps trying."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dingtalk_kingdee.hooks.dingtalk_pacing import default_workers
from dingtalk_kingdee.hooks.transport import ConnectionExtras, ExponentialBackoff, RetryBudget
from dingtalk_kingdee.settings import get_settings

CONN_TYPE = "dingtalk"
DEFAULT_BASE_URL = "https://oapi.dingtalk.com"
# The "new" API (api.dingtalk.com, /v1.0/...): Stream mode opens its connections there.
DEFAULT_API_BASE_URL = "https://api.dingtalk.com"
DEFAULT_QPS = 20.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0


def base_url_of(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """The base URL from the connection's host (default https://oapi.dingtalk.com), no trailing /."""
    url = (host or DEFAULT_BASE_URL).strip() or DEFAULT_BASE_URL
    if "://" not in url:
        # DingTalk only speaks HTTPS; a bare host name means https.
        url = f"{schema or 'https'}://{url}"
    if port:
        url = f"{url.rstrip('/')}:{port}"
    return url.rstrip("/")


def api_base_url_of(base_url: str, api_host: str = "") -> str:
    """The base URL of the ``/v1.0`` API: extra ``api_host`` when given; else api.dingtalk.com beside
    DingTalk's own oapi host, and the connection's host otherwise (an emulator or a proxy serves both
    APIs on one root)."""
    if api_host:
        return base_url_of(api_host)
    return DEFAULT_API_BASE_URL if base_url == DEFAULT_BASE_URL else base_url


@dataclass(frozen=True)
class DingTalkConnectionConfig:
    """Everything the hook reads from its Airflow connection (``login`` = app key, ``password`` =
    app secret, extra ``agent_id``, ``qps``, ``connect_timeout``, ``read_timeout``, ``max_workers``,
    ``rate_limit_redis_url``: the Redis pacing this app in every process, default the setting
    ``DK_RATE_LIMIT_REDIS_URL``; ``"local"`` = this process alone; ``api_host``: the ``/v1.0`` API's
    base URL, see ``api_base_url_of``)."""

    base_url: str
    app_key: str
    app_secret: str = field(repr=False)
    agent_id: str | None
    qps: float
    connect_timeout: float
    read_timeout: float
    max_workers: int
    rate_limit_redis_url: str = ""
    api_base_url: str = DEFAULT_API_BASE_URL

    @classmethod
    def from_connection(cls, conn: Any, *, connect_timeout: float | None = None,
                        read_timeout: float | None = None, max_workers: int | None = None) -> DingTalkConnectionConfig:
        """Arguments given to the hook win over the connection's extra."""
        conn_id = getattr(conn, "conn_id", None)
        if not conn.login or not conn.password:
            raise ValueError(f"connection {conn_id!r} needs the app key as login and the app secret as password")
        extras = ConnectionExtras(CONN_TYPE, conn.extra_dejson, conn_id)
        qps = extras.number("qps", DEFAULT_QPS)
        if qps <= 0:
            raise ValueError(f"connection {conn_id!r}: qps must be positive, got {qps}")
        workers = max_workers or extras.integer("max_workers", 0)
        redis_url = extras.text("rate_limit_redis_url") or get_settings().rate_limit_redis_url
        base_url = base_url_of(conn.host, getattr(conn, "schema", None), getattr(conn, "port", None))
        return cls(
            base_url=base_url,
            app_key=conn.login,
            app_secret=conn.password,
            agent_id=extras.text("agent_id") or None,
            qps=qps,
            connect_timeout=float(connect_timeout or extras.number("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
            read_timeout=float(read_timeout or extras.number("read_timeout", DEFAULT_READ_TIMEOUT)),
            max_workers=workers or default_workers(qps),
            rate_limit_redis_url="" if redis_url == "local" else redis_url,
            api_base_url=api_base_url_of(base_url, extras.text("api_host")),
        )


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying. Defaults suit the real service; tests shorten the waits."""

    transient_attempts: int = 6  # total tries for 5xx / malformed / network / ban
    backoff_base: float = 0.5
    backoff_cap: float = 15.0
    throttle_wait: float = 1.0  # 90018/90002 penalty window
    throttle_retries: int = 30
    ban_wait: float = 5.0  # used when the ban answer does not say how long
    busy_retries: int = 3  # -1 系统繁忙

    def budgets(self) -> dict[str, RetryBudget]:
        """The retry budgets by name of ``ErrorResolution.budget`` (bans count as transient failures)."""
        backoff = ExponentialBackoff(self.backoff_base, self.backoff_cap, jitter=True)
        transient_retries = max(0, self.transient_attempts - 1)
        return {
            "transient": RetryBudget("transient", transient_retries, backoff=backoff),
            "banned": RetryBudget("transient", transient_retries, wait=self.ban_wait),
            "throttled": RetryBudget("throttled", self.throttle_retries, wait=self.throttle_wait),
            "busy": RetryBudget("busy", self.busy_retries, backoff=backoff),
        }
