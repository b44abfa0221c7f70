"""What a failed attempt means, decided apart from how long to wait before the next one.

Each hook classifies its service's answers into an ``ErrorResolution`` (DingTalk reads errcodes,
Kingdee reads HTTP status and body shape); failures of the transport itself (``requests``
exceptions) are classified here, the same way for both. The retry loop (``retry``) then applies
the resolution: it alone decides whether a call is tried again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError

from dingtalk_kingdee.hooks.transport.redaction import redact


class ResponseAction(enum.StrEnum):
    SUCCESS = "success"
    RETRY = "retry"  # try again after a backoff (this caller waits)
    RATE_LIMITED = "rate_limited"  # try again after a wait every caller of the API must respect
    REFRESH_AUTH_THEN_RETRY = "refresh_auth_then_retry"  # new token / new login, then once more
    FAIL = "fail"  # trying again will not help


@dataclass(frozen=True)
class ErrorResolution:
    """The verdict on one attempt.

    ``may_have_been_processed`` is False only when the request surely never reached the service
    (connection refused, throttle refusal, session lost): only then may a call that is not
    idempotent be sent again. ``budget`` names the retry budget the failure draws on; ``wait`` is
    a wait the service asked for; ``error`` the exception to raise if the call fails for good;
    ``detail`` whatever the hook's classifier wants to keep (the parsed answer, say).
    """

    action: ResponseAction
    message: str = ""
    may_have_been_processed: bool = True
    budget: str = "transient"
    wait: float | None = None
    error: Exception | None = None
    detail: Any = None


SUCCESS = ErrorResolution(ResponseAction.SUCCESS, may_have_been_processed=True)


def never_sent(exc: BaseException) -> bool:
    """Whether a ``requests`` error happened before the request could reach the server."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        # urllib3: NewConnectionError and NameResolutionError subclass ConnectTimeoutError.
        return isinstance(reason, ConnectTimeoutError)
    return False


def resolve_request_exception(exc: requests.exceptions.RequestException, service_name: str) -> ErrorResolution:
    """A ``requests`` failure → its resolution. The message is redacted (URLs may carry tokens).

    A malformed URL and a TLS failure are configuration faults: no retry cures them. Everything
    else is transient; it may have been processed unless the connection never opened.
    """
    text = redact(str(exc))
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return ErrorResolution(ResponseAction.FAIL, f"bad {service_name} URL: {text}",
                               may_have_been_processed=False,
                               error=ValueError(f"bad {service_name} URL: {text}"))
    if isinstance(exc, requests.exceptions.SSLError):
        return ErrorResolution(ResponseAction.FAIL, f"TLS failure: {text}", may_have_been_processed=False)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return ErrorResolution(ResponseAction.RETRY, f"connect timeout: {text}", may_have_been_processed=False)
    if isinstance(exc, requests.exceptions.Timeout):
        return ErrorResolution(ResponseAction.RETRY, f"read timeout: {text}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return ErrorResolution(ResponseAction.RETRY, f"connection error: {text}",
                               may_have_been_processed=not never_sent(exc))
    return ErrorResolution(ResponseAction.RETRY, f"{type(exc).__name__}: {text}")
