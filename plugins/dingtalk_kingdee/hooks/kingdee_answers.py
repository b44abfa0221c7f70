"""Kingdee WebAPI answers read leniently: ``ResponseStatus``, per-model BatchSave outcomes, query errors.

Kingdee writes ``IsSuccess`` as true/"true"/1, ``MsgCode`` as 11/"11"/"" and puts the status in
different places per service; these pure functions read every form the service is known to use.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dingtalk_kingdee.errors import KingdeeError, KingdeeOutcomeUnknown

SESSION_LOST = 1
# MsgCodes that concern the whole call (permission, exception, bad parameter, call limit, admin login).
WHOLE_CALL_MSG_CODES = frozenset({1, 2, 4, 8, 14, 15})


@dataclass(frozen=True)
class FieldError:
    field: str | None
    message: str


@dataclass(frozen=True)
class SaveOutcome:
    """The outcome of one model of a BatchSave, by its position (DIndex) in the batch.

    ``unknown``: the answer neither saved nor refused this model by its DIndex (IsSuccess true with
    no SuccessEntitys, an error naming no model of a batch): it may be in Kingdee, so it must be
    looked up, never taken as refused.
    """

    index: int
    success: bool
    kingdee_id: int | None
    number: str | None
    errors: list[FieldError] = field(default_factory=list)
    unknown: bool = False


@dataclass(frozen=True)
class OperationResult:
    """The outcome of Submit / Audit on a list of bill numbers."""

    success: bool
    numbers_ok: list[str]
    errors: list[FieldError]
    msg_code: int | None


@dataclass(frozen=True)
class ResponseStatus:
    is_success: bool
    msg_code: int | None
    errors: list[dict]
    successes: list[dict]

    def first_message(self) -> str:
        for error in self.errors:
            message = str(error.get("Message") or "").strip()
            if message:
                return message
        return "no message"


def lenient_bool(value: Any) -> bool:
    """``IsSuccess`` as Kingdee writes it: true/false, "true"/"false", 1/0, missing."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return False


def lenient_int(value: Any) -> int | None:
    """``MsgCode`` / ``Id`` / ``DIndex`` as Kingdee writes them: 11, "11", "", null."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)):
        return int(value) if math.isfinite(value) and value == int(value) else None
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
    return None


def _response_status_dict(payload: Any) -> dict | None:
    """The ``ResponseStatus`` object of an answer, wherever the answer shape puts it."""
    if isinstance(payload, list):  # ExecuteBillQuery errors: [[{"Result": {...}}]]
        while isinstance(payload, list) and len(payload) == 1:
            payload = payload[0]
        if not isinstance(payload, dict):
            return None
    if not isinstance(payload, dict):
        return None
    result = payload.get("Result", payload)
    if isinstance(result, dict) and isinstance(result.get("ResponseStatus"), dict):
        return result["ResponseStatus"]
    if isinstance(payload.get("ResponseStatus"), dict):
        return payload["ResponseStatus"]
    return None


def parse_response_status(payload: Any) -> ResponseStatus | None:
    """A lenient reading of ``Result.ResponseStatus``; None when the answer carries none."""
    raw = _response_status_dict(payload)
    if raw is None:
        return None
    errors = [e for e in (raw.get("Errors") or []) if isinstance(e, dict)]
    successes = [s for s in (raw.get("SuccessEntitys") or []) if isinstance(s, dict)]
    return ResponseStatus(
        is_success=lenient_bool(raw.get("IsSuccess")),
        msg_code=lenient_int(raw.get("MsgCode")),
        errors=errors,
        successes=successes,
    )


def is_session_lost(payload: Any) -> bool:
    status = parse_response_status(payload)
    return status is not None and not status.is_success and status.msg_code == SESSION_LOST


def query_error_status(page: Any) -> ResponseStatus | None:
    """The status of an ExecuteBillQuery error answer (``[[{"Result": ...}]]``), None for data rows."""
    if isinstance(page, dict):
        return parse_response_status(page) or ResponseStatus(False, None, [{"Message": str(page)[:200]}], [])
    if (isinstance(page, list) and page and isinstance(page[0], list) and page[0]
            and isinstance(page[0][0], dict)):
        return parse_response_status(page[0][0]) or ResponseStatus(
            False, None, [{"Message": str(page[0][0])[:200]}], [])
    return None


def field_error(raw: dict) -> FieldError:
    name = raw.get("FieldName")
    return FieldError(field=str(name) if name not in (None, "") else None,
                      message=str(raw.get("Message") or "").strip() or "no message")


def _is_whole_call_failure(status: ResponseStatus) -> bool:
    """A whole-call MsgCode without per-model information (no success, no error past the first model)."""
    if status.is_success or status.msg_code not in WHOLE_CALL_MSG_CODES or status.successes:
        return False
    return not any((lenient_int(e.get("DIndex")) or 0) >= 1 for e in status.errors)


def _answered_status(payload: Any, service: str, write: bool = False) -> ResponseStatus:
    """The answer's ResponseStatus; KingdeeError when the whole call failed, or when there is none
    (KingdeeOutcomeUnknown for a ``write``: an answer that says nothing may follow a commit)."""
    status = parse_response_status(payload)
    if status is None:
        message = f"answer without ResponseStatus: {str(payload)[:200]}"
        if write:
            raise KingdeeOutcomeUnknown(f"{service}: {message}; the call may have been processed, "
                                        "query Kingdee before sending it again")
        raise KingdeeError(message, service=service)
    if _is_whole_call_failure(status):
        raise KingdeeError(status.first_message(), msg_code=status.msg_code,
                           errors=[field_error(e) for e in status.errors], service=service)
    return status


def save_outcomes(payload: Any, model_count: int, service: str = "BatchSave") -> list[SaveOutcome]:
    """Exactly one SaveOutcome per model, by DIndex, from a BatchSave answer.

    Raises KingdeeError for a whole-call failure, and KingdeeOutcomeUnknown when the answer carries
    no ResponseStatus or a saved bill cannot be attributed to a model (a resend could then duplicate
    it). A model refused by no error of its own DIndex is ``unknown``, never refused.
    """
    status = _answered_status(payload, service, write=True)

    saved: dict[int, dict] = {}
    for entity in status.successes:
        index = lenient_int(entity.get("DIndex"))
        if index is None and model_count == 1:
            index = 0
        if index is None or not 0 <= index < model_count:
            raise KingdeeOutcomeUnknown(
                f"{service} reported a saved bill ({entity.get('Number')!r}) without a usable DIndex; "
                "query Kingdee before sending these models again")
        saved[index] = entity

    errors_by_index: dict[int, list[FieldError]] = {}
    unplaced: list[FieldError] = []
    for raw in status.errors:
        index = lenient_int(raw.get("DIndex"))
        if index is None and model_count == 1:
            index = 0
        if index is None or not 0 <= index < model_count:
            unplaced.append(field_error(raw))
        else:
            errors_by_index.setdefault(index, []).append(field_error(raw))

    unsettled = [i for i in range(model_count) if i not in saved and i not in errors_by_index]
    if unplaced and len(unsettled) == 1:
        # Errors naming no model, and one model neither saved nor refused by DIndex: theirs by elimination.
        errors_by_index[unsettled[0]] = []
    outcomes = []
    for index in range(model_count):
        if index in saved:
            entity = saved[index]
            number = entity.get("Number")
            outcomes.append(SaveOutcome(index, True, lenient_int(entity.get("Id")),
                                        str(number) if number not in (None, "") else None,
                                        errors_by_index.get(index, [])))
            continue
        if index in errors_by_index:
            outcomes.append(SaveOutcome(index, False, None, None, errors_by_index[index] + unplaced))
            continue
        note = FieldError(None, f"{service} reported model {index} neither as saved nor as refused "
                                f"(IsSuccess={status.is_success}, MsgCode={status.msg_code}); it may be in Kingdee")
        outcomes.append(SaveOutcome(index, False, None, None, [*unplaced, note], unknown=True))
    return outcomes


def operation_result(payload: Any, service: str) -> OperationResult:
    """Submit / Audit answer → OperationResult; a whole-call failure raises KingdeeError."""
    status = _answered_status(payload, service)
    numbers = [str(s["Number"]) for s in status.successes if s.get("Number") not in (None, "")]
    return OperationResult(success=status.is_success, numbers_ok=numbers,
                           errors=[field_error(e) for e in status.errors], msg_code=status.msg_code)
