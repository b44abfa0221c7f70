"""What a DingTalk oapi answer means: its verdict, and the resolution the retry loop applies.

DingTalk answers HTTP 200 with an ``errcode`` in the body for nearly everything, wraps some
codes under errcode 88 with the real one in ``sub_code``, and bans an IP with an HTML page or a
``{"status": 1111, "wait": 5}`` body: neither status nor body alone is to be trusted.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from dingtalk_kingdee.errors import DingTalkError, DingTalkQuotaExhausted
from dingtalk_kingdee.hooks.transport import SUCCESS, ErrorResolution, ResponseAction, redact

# errcodes (plain, or as the string sub_code of a wrapping errcode 88)
WRAPPER_ERRCODE = 88
TOKEN_INVALID_CODES = frozenset({40001, 40014, 42001, 33001})
THROTTLE_CODES = frozenset({90018, 90002})
QUOTA_CODE = 90020  # the monthly quota: not retryable within the run (reference "Metered calls")
BUSY_CODE = -1


class Verdict(enum.Enum):
    OK = "ok"
    TOKEN_INVALID = "token_invalid"  # drop the token, fetch a new one, retry once
    THROTTLED = "throttled"  # 90018 / 90002 / HTTP 429: wait out the penalty window
    BANNED = "banned"  # per-IP ban page or {"status":1111,"wait":5}: wait, then retry
    BUSY = "busy"  # -1 系统繁忙: retry at most 3 times
    TRANSIENT = "transient"  # 5xx, malformed answer, network failure: backoff and retry
    PERMANENT = "permanent"  # anything else, including 90020 (monthly quota)


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    body: dict | None = None
    errcode: int | None = None
    sub_code: str | None = None
    errmsg: str = ""
    wait: float | None = None  # server-suggested wait in seconds (ban JSON)
    # False when the request surely never reached the service (connect failure, throttle
    # refusal): only then may a non-idempotent call be sent again.
    maybe_processed: bool = True


def effective_errcode(errcode: int, sub_code: str | None) -> int | None:
    """The code that says what happened: ``sub_code`` when wrapped under 88 (None if not numeric)."""
    if errcode == WRAPPER_ERRCODE and sub_code is not None:
        try:
            return int(str(sub_code).strip())
        except ValueError:
            return None
    return errcode


def classify_answer(status_code: int, content: bytes) -> Answer:
    """Decide what an HTTP answer from DingTalk means, never trusting status or body alone."""
    if status_code >= 500:
        return Answer(Verdict.TRANSIENT, errmsg=f"HTTP {status_code}")
    text = content.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        snippet = text.strip()[:80]
        if snippet.startswith("<"):
            # The per-IP ban comes back as an HTML page instead of JSON.
            return Answer(Verdict.BANNED, errmsg=f"HTTP {status_code} HTML page instead of JSON",
                          maybe_processed=False)
        if status_code == 429:
            return Answer(Verdict.THROTTLED, errmsg="HTTP 429", maybe_processed=False)
        if 400 <= status_code < 500:
            return Answer(Verdict.PERMANENT, errcode=status_code,
                          errmsg=f"HTTP {status_code}: {snippet!r}")
        return Answer(Verdict.TRANSIENT, errmsg=f"HTTP {status_code} malformed JSON: {snippet!r}")
    if not isinstance(body, dict):
        return Answer(Verdict.TRANSIENT, errmsg=f"HTTP {status_code} JSON is not an object")
    if "errcode" not in body and (body.get("status") == 1111 or "punish" in body):
        try:
            wait_s = float(body.get("wait", 5))
        except (TypeError, ValueError):
            wait_s = 5.0
        return Answer(Verdict.BANNED, body=body, errmsg=f"per-IP ban: {json.dumps(body)[:120]}",
                      wait=wait_s, maybe_processed=False)
    if status_code == 429:
        return Answer(Verdict.THROTTLED, body=body, errmsg="HTTP 429", maybe_processed=False)
    if "errcode" not in body:
        if 400 <= status_code < 500:
            return Answer(Verdict.PERMANENT, body=body, errcode=status_code,
                          errmsg=f"HTTP {status_code}: {text[:120]!r}")
        return Answer(Verdict.TRANSIENT, body=body, errmsg=f"HTTP {status_code} answer without errcode")
    try:
        errcode = int(body["errcode"])
    except (TypeError, ValueError):
        return Answer(Verdict.TRANSIENT, body=body, errmsg=f"unreadable errcode {body['errcode']!r}")
    raw_sub = body.get("sub_code")
    sub_code = None if raw_sub in (None, "") else str(raw_sub)
    errmsg = str(body.get("sub_msg") or body.get("errmsg") or "")
    if errcode == 0:
        return Answer(Verdict.OK, body=body, errcode=0)
    code = effective_errcode(errcode, sub_code)
    if code in TOKEN_INVALID_CODES:
        verdict, processed = Verdict.TOKEN_INVALID, False
    elif code in THROTTLE_CODES:
        verdict, processed = Verdict.THROTTLED, False
    elif code == BUSY_CODE:
        verdict, processed = Verdict.BUSY, False
    else:
        verdict, processed = Verdict.PERMANENT, True
    return Answer(verdict, body=body, errcode=errcode, sub_code=sub_code, errmsg=errmsg,
                  maybe_processed=processed)


# Verdict → (action, retry budget). BANNED draws on the transient budget but waits what the ban says.
_ACTIONS = {
    Verdict.TOKEN_INVALID: (ResponseAction.REFRESH_AUTH_THEN_RETRY, "transient"),
    Verdict.THROTTLED: (ResponseAction.RATE_LIMITED, "throttled"),
    Verdict.BANNED: (ResponseAction.RATE_LIMITED, "banned"),
    Verdict.BUSY: (ResponseAction.RETRY, "busy"),
    Verdict.TRANSIENT: (ResponseAction.RETRY, "transient"),
    Verdict.PERMANENT: (ResponseAction.FAIL, "transient"),
}


def answer_error(answer: Answer, api: str) -> DingTalkError:
    if answer.errcode is not None and effective_errcode(answer.errcode, answer.sub_code) == QUOTA_CODE:
        return DingTalkQuotaExhausted(answer.errcode, redact(answer.errmsg), answer.sub_code, api)
    return DingTalkError(answer.errcode if answer.errcode is not None else 0, redact(answer.errmsg),
                         answer.sub_code, api)


def resolve_answer(answer: Answer, api: str) -> ErrorResolution:
    """The resolution of one classified answer (its ``detail`` is the answer)."""
    if answer.verdict is Verdict.OK:
        return SUCCESS
    action, budget = _ACTIONS[answer.verdict]
    code = f" (errcode {answer.errcode}{f'/{answer.sub_code}' if answer.sub_code else ''})" \
        if answer.errcode is not None else ""
    return ErrorResolution(action, f"{redact(answer.errmsg)}{code}",
                           may_have_been_processed=answer.maybe_processed, budget=budget, wait=answer.wait,
                           error=answer_error(answer, api), detail=answer)
