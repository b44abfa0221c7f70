"""The Kingdee connection as the hook reads it once (a frozen object that never prints a secret)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dingtalk_kingdee.hooks.transport import ConnectionExtras

CONN_TYPE = "kingdee"
DEFAULT_LCID = 2052
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_RETRY_BACKOFF = 1.0


def _require_text(value: Any, what: str) -> str:
    text = str(value or "").strip()
    if not text:
        raise ValueError(f"the Kingdee connection needs {what}")
    return text


@dataclass(frozen=True)
class KingdeeConnectionConfig:
    """Everything the hook reads from its Airflow connection."""

    server_url: str
    user_name: str
    secret: str
    acct_id: str
    app_id: str
    lcid: int
    org_num: str
    auth_mode: str
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    retry_backoff: float
    ca_bundle: str | None

    def __repr__(self) -> str:  # the password / app secret must never reach a log line
        return (f"KingdeeConnectionConfig(server_url={self.server_url!r}, user_name={self.user_name!r}, "
                f"acct_id={self.acct_id!r}, app_id={self.app_id!r}, auth_mode={self.auth_mode!r})")

    @classmethod
    def from_connection(cls, conn: Any) -> KingdeeConnectionConfig:
        extras = ConnectionExtras(CONN_TYPE, conn.extra_dejson, getattr(conn, "conn_id", None))
        host = _require_text(conn.host, "a host (the server URL ending in /k3cloud/)")
        if "://" not in host:
            host = "https://" + host
        if not host.endswith("/"):
            host += "/"
        auth_mode = extras.text("auth_mode", "session").lower()
        if auth_mode not in ("session", "signature"):
            raise ValueError(f"auth_mode must be session or signature, not {auth_mode!r}")
        app_id = extras.text("app_id")
        if auth_mode == "signature" and not app_id:
            raise ValueError("auth_mode signature needs app_id in the connection extra")
        for insecure in ("verify", "verify_ssl"):
            value = extras.get(insecure)
            if value is not None and not value:
                raise ValueError("TLS verification cannot be switched off; set ca_bundle to a private CA")
        return cls(
            server_url=host,
            user_name=_require_text(conn.login, "a login (the Kingdee user name)"),
            secret=_require_text(conn.password, "a password (password or app secret)"),
            acct_id=_require_text(extras.get("acct_id"), "acct_id in its extra"),
            app_id=app_id,
            lcid=extras.integer("lcid", DEFAULT_LCID) or DEFAULT_LCID,
            org_num=extras.text("org_num", "0"),
            auth_mode=auth_mode,
            connect_timeout=extras.number("connect_timeout", DEFAULT_CONNECT_TIMEOUT) or DEFAULT_CONNECT_TIMEOUT,
            read_timeout=extras.number("read_timeout", DEFAULT_READ_TIMEOUT) or DEFAULT_READ_TIMEOUT,
            max_attempts=max(1, extras.integer("max_attempts", DEFAULT_MAX_ATTEMPTS) or DEFAULT_MAX_ATTEMPTS),
            retry_backoff=max(0.0, extras.number("retry_backoff", DEFAULT_RETRY_BACKOFF)),
            ca_bundle=extras.text("ca_bundle") or None,
        )
