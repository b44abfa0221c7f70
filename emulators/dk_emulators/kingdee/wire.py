"""What every K/3Cloud WebAPI answer and request shares: service names, MsgCodes, exact JSON
(Decimal numbers), the ResponseStatus envelope, whole-call errors and the three body shapes."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi.responses import Response

AUTH_PREFIX = "Kingdee.BOS.WebApi.ServicesStub.AuthService."
FORM_PREFIX = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService."
QUERY_SERVICES = {"ExecuteBillQuery", "BillQuery"}
SESSION_LOST = "会话信息已丢失，请重新登录"
PASSPORT_FAILED = "Fail to verify thirty passport"

# MsgCode values (reference: 0 default, 1 session lost, 4 exception, 8 bad parameter, 9 field or
# value does not exist, 10 no data, 11 validation failed, 12 not allowed).
MSG_OK, MSG_SESSION, MSG_EXCEPTION, MSG_PARAM, MSG_NOT_EXIST, MSG_NO_DATA, MSG_INVALID = 0, 1, 4, 8, 9, 10, 11


def short_service(name: str) -> str:
    """``Kingdee.BOS....DynamicFormService.BatchSave`` -> ``BatchSave`` (a short name stays)."""
    return name.rsplit(".", 1)[-1]


# ------------------------------------------------------------------------------------ JSON, bools

def dumps(value: Any) -> str:
    """JSON text where Decimal becomes an exact JSON number (json.dumps would need float)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=False) + ":" + dumps(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, datetime):
        return json.dumps(value.strftime("%Y-%m-%dT%H:%M:%S"))
    return json.dumps(value, ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """Parse JSON keeping every non-integer number as Decimal."""
    return json.loads(text, parse_float=Decimal)


def parse_bool(value: Any, default: bool) -> bool:
    """Lenient boolean: true/false, "true"/"false" in any case, 1/0, "1"/"0"; else ``default``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
    return default


def json_response(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=dumps(payload), status_code=status_code, media_type="application/json",
                    headers=headers)


# ----------------------------------------------------------------------------- values in requests

def get_key(mapping: Any, key: str) -> Any:
    """Case-insensitive key lookup (K/3Cloud keys are case-insensitive)."""
    if not isinstance(mapping, dict):
        return None
    if key in mapping:
        return mapping[key]
    upper = key.upper()
    for k, v in mapping.items():
        if str(k).upper() == upper:
            return v
    return None


def set_key(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` replacing any spelling of it."""
    for k in list(mapping):
        if k.upper() == key.upper():
            del mapping[k]
    mapping[key] = value


def int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def decimal_or_none(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def field_list(value: Any) -> list[str]:
    """A field list given as ``"A,B"`` or ``["A", "B"]``."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [str(part).strip() for part in value if str(part).strip()]
    return []


# ---------------------------------------------------------------------------- answers and errors

class KingdeeError(Exception):
    """A whole-call failure answered as a ResponseStatus with ``msg_code``."""

    def __init__(self, message: str, msg_code: int = MSG_EXCEPTION, field_name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.msg_code = msg_code
        self.field_name = field_name


def response_status(errors: list[dict[str, Any]] | None = None, success: list[dict[str, Any]] | None = None,
                    msg_code: int = MSG_OK) -> dict[str, Any]:
    errors = errors or []
    ok = not errors
    status: dict[str, Any] = {"IsSuccess": ok, "Errors": errors, "SuccessEntitys": success or [],
                              "SuccessMessages": [], "MsgCode": msg_code if not ok else MSG_OK}
    if not ok:
        status = {"ErrorCode": 500, **status}
    return status


def error_result(message: str, msg_code: int, field_name: str | None = None) -> dict[str, Any]:
    return {"Result": {"ResponseStatus": response_status(
        [{"FieldName": field_name, "Message": message, "DIndex": 0}], msg_code=msg_code)}}


def parse_call(body: bytes, service: str) -> tuple[str | None, dict[str, Any]]:
    """(form id, data) from any of the three body shapes; data given as a JSON string is decoded."""
    try:
        payload = loads(body) if body.strip() else {}
    except ValueError as exc:
        raise KingdeeError(f"请求报文不是有效的JSON：{exc}", MSG_PARAM) from exc
    if not isinstance(payload, dict):
        raise KingdeeError("请求报文格式不正确", MSG_PARAM)
    form_id: Any
    params = get_key(payload, "parameters")
    if isinstance(params, list):
        if service in QUERY_SERVICES:
            form_id, data = None, params[0] if params else None
        else:
            form_id = params[0] if params else None
            data = params[1] if len(params) > 1 else None
    else:
        form_id, data = get_key(payload, "formid"), get_key(payload, "data")
    if isinstance(data, str):
        try:
            data = loads(data) if data.strip() else {}
        except ValueError as exc:
            raise KingdeeError(f"参数data不是有效的JSON：{exc}", MSG_PARAM) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KingdeeError("参数data格式不正确", MSG_PARAM)
    if form_id in (None, ""):
        form_id = get_key(data, "FormId")
    return (str(form_id) if form_id not in (None, "") else None), data
