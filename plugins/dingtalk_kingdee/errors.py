"""The project's error types. A reject is data, not an exception: see ``transform``."""

from __future__ import annotations


class IntegrationError(Exception):
    """Base of every error this package raises on purpose."""


class DingTalkError(IntegrationError):
    """DingTalk answered with a non-zero errcode that retrying will not cure."""

    def __init__(self, errcode: int, errmsg: str, sub_code: str | None = None, api: str = "") -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.sub_code = sub_code
        self.api = api
        sub = f", sub_code={sub_code}" if sub_code else ""
        where = f" on {api}" if api else ""
        super().__init__(f"DingTalk error{where}: errcode={errcode}{sub}: {errmsg}")


class DingTalkQuotaExhausted(DingTalkError):
    """errcode 90020: the organisation's monthly quota of metered calls is spent until the 1st of
    next month. Never retried; no further DingTalk call is worth making in this run."""


class DingTalkCallBudgetReached(IntegrationError):
    """The month's metered DingTalk calls already reach the scheme's ``monthly_call_budget``: a run that
    is not the sync (a value-map suggestion) makes no DingTalk call then."""


class DingTalkUnavailable(IntegrationError):
    """DingTalk stayed throttled, busy or unreachable after every retry allowed."""


class KingdeeError(IntegrationError):
    """Kingdee answered IsSuccess=false for a whole call (not a per-model failure)."""

    def __init__(self, message: str, msg_code: int | None = None, errors: list | None = None,
                 service: str = "") -> None:
        self.msg_code = msg_code
        self.errors = errors or []
        self.service = service
        where = f" on {service}" if service else ""
        super().__init__(f"Kingdee error{where} (MsgCode {msg_code}): {message}")


class KingdeeAuthError(KingdeeError):
    """Login or signature refused: wrong account set, user, password, app id or secret."""


class KingdeeOutcomeUnknown(IntegrationError):
    """A write may or may not have reached Kingdee (timeout, dropped connection, gateway error).

    Never resend blindly: query Kingdee for the bill first.
    """


class SchemeError(IntegrationError):
    """A scheme file or one of its value maps is invalid; the message names file, key and fault."""
