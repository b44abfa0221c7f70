"""What the DingTalk approval API shares across calls: API names and paths, the listing limits,
error codes and messages, the fault names (errcode faults and transport faults), the error
pages, and China-time conversions."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi.responses import JSONResponse

CHINA_TZ = timezone(timedelta(hours=8))
DEFAULT_PROCESS_CODE = "PROC-EXPENSE-DEMO"

# API names used by calls counters, fault targeting and the QPS limiter.
API_GETTOKEN = "gettoken"
API_LISTIDS = "listids"
API_GET = "get"
API_COMMENT = "comment_add"
API_DEPARTMENTS = "department_listsub"
API_USERS = "user_list"
API_PATHS = {
    API_GETTOKEN: "/gettoken",
    API_LISTIDS: "/topapi/processinstance/listids",
    API_GET: "/topapi/processinstance/get",
    API_COMMENT: "/topapi/process/instance/comment/add",
    API_DEPARTMENTS: "/topapi/v2/department/listsub",
    API_USERS: "/topapi/v2/user/list",
}

# Listing limits documented by DingTalk.
MAX_PAGE_SIZE = 20
DEFAULT_PAGE_SIZE = 10  # UNVERIFIED: what the server uses when size is omitted
MAX_WINDOW = timedelta(days=120)
MAX_LOOKBACK = timedelta(days=365)
MAX_IDS_PER_QUERY = 10_000
MAX_USERIDS = 10

# Error codes. Token and throttling codes are documented; the parameter-error code and the
# messages of parameter errors are UNVERIFIED choices (see docs/emulators-dingtalk.md).
ERR_WRAPPED = 88
ERR_BUSY = -1
ERR_SECRET_OR_TOKEN = 40001
ERR_INVALID_TOKEN = 40014
ERR_TOKEN_EXPIRED = 42001
ERR_INVALID_CORP = 33001
ERR_MISSING_PARAM = 40035
ERR_BAD_APP_CREDENTIALS = 40096
ERR_INVALID_PARAM = 400002  # UNVERIFIED
ERR_GLOBAL_QPS = 90002
ERR_APP_QPS = 90018
ERR_MONTHLY_QUOTA = 90020

ERROR_MESSAGES = {
    ERR_BUSY: "系统繁忙",
    ERR_SECRET_OR_TOKEN: "获取access_token时Secret错误，或者access_token无效",
    ERR_INVALID_TOKEN: "不合法的access_token",
    ERR_TOKEN_EXPIRED: "access_token超时",
    ERR_INVALID_CORP: "无效的企业ID",
    ERR_BAD_APP_CREDENTIALS: "不合法的appKey或appSecret",
    ERR_GLOBAL_QPS: "服务器过载，该接口调用超出了全局最大qps限制，请稍后重试",  # UNVERIFIED wording
    ERR_MONTHLY_QUOTA: "该应用当月调用接口的次数已达上限",  # UNVERIFIED wording
}
# Codes the real service sometimes returns wrapped under errcode 88 with sub_code as a string.
WRAPPABLE_CODES = frozenset(
    {ERR_SECRET_OR_TOKEN, ERR_INVALID_TOKEN, ERR_TOKEN_EXPIRED, ERR_INVALID_CORP,
     ERR_GLOBAL_QPS, ERR_APP_QPS, ERR_MONTHLY_QUOTA}
)

# Faults that answer with a DingTalk errcode: name -> code. A "_plain" / "_wrapped" suffix
# forces the encoding; without it the emulator's ``wrap_errors`` style decides.
ERRCODE_FAULTS = {
    "invalid_token": ERR_INVALID_TOKEN,
    "expired_token": ERR_TOKEN_EXPIRED,
    "token_40001": ERR_SECRET_OR_TOKEN,
    "token_33001": ERR_INVALID_CORP,
    "qps": ERR_APP_QPS,
    "global_qps": ERR_GLOBAL_QPS,
    "quota": ERR_MONTHLY_QUOTA,
    "busy": ERR_BUSY,
}
TRANSPORT_FAULTS = frozenset(
    {"http_500", "http_502", "ip_ban_html", "ip_ban_json", "malformed_json", "hang", "drop"}
)
WRAP_STYLES = ("plain", "wrapped", "alternate")

IP_BAN_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>访问被拒绝</title></head>
<body><div class="punish-wrapper"><h1>很抱歉，由于您访问的URL有可能对网站造成安全威胁，您的访问被阻断。</h1>
<p>Sorry, your request has been blocked as it may cause potential threats to the server's security.</p>
<p>请求ID: {request_id}</p></div></body></html>
"""
BAD_GATEWAY_HTML = """<html>
<head><title>502 Bad Gateway</title></head>
<body><center><h1>502 Bad Gateway</h1></center><hr><center>Tengine</center></body>
</html>
"""
INTERNAL_ERROR_HTML = """<html>
<head><title>500 Internal Server Error</title></head>
<body><center><h1>500 Internal Server Error</h1></center><hr><center>Tengine</center></body>
</html>
"""



def known_fault_names() -> list[str]:
    """Every fault name ``inject`` accepts."""
    return sorted(FAULT_KINDS)


def _fault_kinds() -> dict[str, str]:
    kinds = {
        "http_500": "HTTP 500 with the gateway's HTML page",
        "http_502": "HTTP 502 with the gateway's HTML page",
        "ip_ban_html": "HTTP 200 with the per-IP ban HTML page",
        "ip_ban_json": "the per-IP ban as a JSON body without errcode",
        "malformed_json": "HTTP 200 with a truncated JSON body",
        "hang": "answer only after hang_seconds (or when the emulator stops)",
        "drop": "abort the connection without answering",
    }
    for base, code in ERRCODE_FAULTS.items():
        kinds[base] = f"errcode {code}, plain or wrapped under 88 as wrap_errors says"
        kinds[f"{base}_plain"] = f"errcode {code}, plain"
        kinds[f"{base}_wrapped"] = f"errcode 88 with sub_code \"{code}\""
    return kinds


FAULT_KINDS: dict[str, str] = _fault_kinds()


def parse_errcode_fault(name: str) -> tuple[int, bool | None]:
    """``"qps_wrapped"`` -> (90018, True); ``"busy"`` -> (-1, None): code and forced wrapping."""
    for suffix, forced in (("_wrapped", True), ("_plain", False)):
        if name.endswith(suffix) and name.removesuffix(suffix) in ERRCODE_FAULTS:
            return ERRCODE_FAULTS[name.removesuffix(suffix)], forced
    return ERRCODE_FAULTS[name], None


class ApiError(Exception):
    """An error answer with a DingTalk errcode; ``wrap`` forces (True/False) or leaves (None) the
    choice of plain or wrapped-under-88 encoding."""

    def __init__(self, code: int, message: str, wrap: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.wrap = wrap


def request_id() -> str:
    return uuid.uuid4().hex[:15]


def ok(**fields: Any) -> JSONResponse:
    """A success answer: errcode 0 with ``fields`` and a request id."""
    return JSONResponse({"errcode": 0, "errmsg": "ok", **fields, "request_id": request_id()})


def error_answer(error: ApiError, wrapped: bool) -> JSONResponse:
    """An error answer, plain or wrapped under errcode 88 with the code as a string ``sub_code``."""
    body: dict[str, Any]
    if wrapped:
        body = {"errcode": ERR_WRAPPED, "sub_code": str(error.code), "sub_msg": error.message,
                "errmsg": f"ding talk error[subcode={error.code},submsg={error.message}]"}
    else:
        body = {"errcode": error.code, "errmsg": error.message}
    body["request_id"] = request_id()
    return JSONResponse(body)


def china_time_to_ms(text: str) -> int:
    """``"2024-03-06 09:01:02"`` (China time, no offset) -> epoch milliseconds."""
    parsed = datetime.strptime(text.strip()[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA_TZ)
    return int(parsed.timestamp() * 1000)


def format_china_time(moment: datetime | str | None, clock: Callable[[], datetime]) -> str:
    """A datetime (aware; naive = China time), a ready string or None (= now) -> China-time string."""
    if isinstance(moment, str):
        return moment
    if moment is None:
        moment = clock()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CHINA_TZ)
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")

