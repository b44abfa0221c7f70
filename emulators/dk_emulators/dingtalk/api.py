"""The four approval API calls the sync uses, each checking its parameters the way the service
does: ``gettoken``, ``listids`` (processinstance/listids), ``get`` (processinstance/get) and
``comment_add`` (process/instance/comment/add). The emulator runs every one through its common
path (call count, faults, token, QPS, latency) before the handler here."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from dk_emulators.dingtalk.wire import (
    DEFAULT_PAGE_SIZE,
    ERR_BAD_APP_CREDENTIALS,
    ERR_INVALID_PARAM,
    ERR_MISSING_PARAM,
    ERROR_MESSAGES,
    MAX_IDS_PER_QUERY,
    MAX_LOOKBACK,
    MAX_PAGE_SIZE,
    MAX_USERIDS,
    MAX_WINDOW,
    ApiError,
    format_china_time,
    ok,
    request_id,
)

if TYPE_CHECKING:
    from dk_emulators.dingtalk.emulator import DingTalkEmulator


async def read_body(request: Request) -> dict:
    """The call's parameters: a JSON object, or a form-encoded body (topapi takes both)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        try:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(ERR_INVALID_PARAM, "不合法的参数: 请求体不是合法的JSON") from None
        return {key: values[-1] for key, values in form.items()}
    if not isinstance(parsed, dict):
        raise ApiError(ERR_INVALID_PARAM, "不合法的参数: 请求体必须是JSON对象")
    return parsed


def gettoken(emu: DingTalkEmulator, api: str, body: dict, request: Request) -> Response:
    app_key = request.query_params.get("appkey")
    app_secret = request.query_params.get("appsecret")
    if not app_key or app_secret is None:
        raise ApiError(ERR_MISSING_PARAM, "缺少参数 appkey 或 appsecret")
    if emu.apps.get(app_key) != app_secret:
        raise ApiError(ERR_BAD_APP_CREDENTIALS, ERROR_MESSAGES[ERR_BAD_APP_CREDENTIALS])
    emu.check_qps(app_key, api)
    token, expires_in = emu.tokens.issue(app_key, emu.token_ttl)
    return ok(access_token=token, expires_in=expires_in)


def listids(emu: DingTalkEmulator, api: str, body: dict, request: Request) -> Response:
    process_code = body.get("process_code")
    if not process_code:
        raise ApiError(ERR_MISSING_PARAM, "缺少参数 process_code")
    if body.get("start_time") in (None, ""):
        raise ApiError(ERR_MISSING_PARAM, "缺少参数 start_time")
    start_ms = int_param(body, "start_time")
    now_ms = int(emu.clock().timestamp() * 1000)
    end_ms = int_param(body, "end_time") if body.get("end_time") not in (None, "") else now_ms
    size = int_param(body, "size") if body.get("size") not in (None, "") else DEFAULT_PAGE_SIZE
    cursor = int_param(body, "cursor") if body.get("cursor") not in (None, "") else 0
    if size > MAX_PAGE_SIZE or size < 1:
        raise ApiError(ERR_INVALID_PARAM, f"size参数不合法，取值范围为1~{MAX_PAGE_SIZE}")
    if cursor < 0:
        raise ApiError(ERR_INVALID_PARAM, "cursor参数不合法")
    if process_code not in emu.store.process_codes:
        raise ApiError(ERR_INVALID_PARAM, f"审批模板不存在: process_code={process_code}")
    if end_ms < start_ms:
        raise ApiError(ERR_INVALID_PARAM, "end_time不能早于start_time")
    if end_ms - start_ms > MAX_WINDOW.total_seconds() * 1000:
        raise ApiError(ERR_INVALID_PARAM, "查询时间范围不能超过120天")
    if now_ms - start_ms > MAX_LOOKBACK.total_seconds() * 1000:
        raise ApiError(ERR_INVALID_PARAM, "start_time不能早于当前时间365天")
    userids: set[str] | None = None
    if body.get("userid_list"):
        userids = {u.strip() for u in str(body["userid_list"]).split(",") if u.strip()}
        if len(userids) > MAX_USERIDS:
            raise ApiError(ERR_INVALID_PARAM, f"userid_list最多支持{MAX_USERIDS}个用户")

    selected = emu.store.select(process_code, start_ms, end_ms, userids)
    # The service hands out at most MAX_IDS_PER_QUERY ids per query, then stops paging.
    selected = selected[:MAX_IDS_PER_QUERY]
    page = selected[cursor:cursor + size]
    result: dict[str, Any] = {"list": page}
    if cursor + size < len(selected):
        result["next_cursor"] = cursor + size
    return ok(result=result)


def int_param(body: dict, name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool):
        raise ApiError(ERR_INVALID_PARAM, f"不合法的参数 {name}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(ERR_INVALID_PARAM, f"不合法的参数 {name}") from None


def get(emu: DingTalkEmulator, api: str, body: dict, request: Request) -> Response:
    instance_id = body.get("process_instance_id")
    if not instance_id:
        raise ApiError(ERR_MISSING_PARAM, "缺少参数 process_instance_id")
    answer = emu.store.detail(str(instance_id))
    if answer is None:
        raise ApiError(ERR_INVALID_PARAM, f"审批实例不存在: process_instance_id={instance_id}")
    return ok(process_instance=answer)


def comment_add(emu: DingTalkEmulator, api: str, body: dict, request: Request) -> Response:
    payload = body.get("request")
    if isinstance(payload, str):  # form-encoded callers send the object as a JSON string
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = None
    if not isinstance(payload, dict):
        raise ApiError(ERR_MISSING_PARAM, "缺少参数 request")
    for name in ("process_instance_id", "comment_userid", "text"):
        if not payload.get(name):
            raise ApiError(ERR_MISSING_PARAM, f"缺少参数 request.{name}")
    instance_id = str(payload["process_instance_id"])
    added = emu.store.add_comment(instance_id, str(payload["comment_userid"]), str(payload["text"]),
                                  payload.get("file"), format_china_time(None, emu.clock))
    if not added:
        raise ApiError(ERR_INVALID_PARAM, f"审批实例不存在: process_instance_id={instance_id}")
    return JSONResponse({"errcode": 0, "errmsg": "ok", "result": True, "success": True, "request_id": request_id()})
