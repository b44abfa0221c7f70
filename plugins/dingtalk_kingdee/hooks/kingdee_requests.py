"""Kingdee WebAPI request bodies: exact JSON for Decimals, BatchSave bodies, escaped FilterStrings.

Pure functions: nothing here performs I/O. A FilterString is built only from validated field keys
and escaped literals, never by pasting caller text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

# Field keys accepted in a FilterString: identifiers, optionally dotted (FCONTACTUNIT.FNumber).
FIELD_KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", re.ASCII)


def decimal_text(value: Decimal) -> str:
    """Exact, exponent-free text of a finite Decimal (``Decimal("1E+2")`` → ``"100"``)."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite amount")
    return format(value, "f")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def to_json(payload: Any) -> str:
    """JSON text of a request body; Decimals become exact decimal strings, never floats."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, default=_json_default)


def validate_field_key(key: str) -> str:
    if not isinstance(key, str) or not FIELD_KEY_PATTERN.fullmatch(key):
        raise ValueError(f"not a field key: {key!r}")
    return key


def filter_literal(value: Any) -> str:
    """One FilterString literal: strings single-quoted with quotes doubled, numbers as numbers."""
    if isinstance(value, bool):
        raise TypeError("a boolean has no FilterString form; compare with 0/1 or '0'/'1' explicitly")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("a NUL character cannot be put in a FilterString")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("Kingdee dates carry no offset: pass a naive datetime in server time")
        return "'" + value.strftime("%Y-%m-%d %H:%M:%S") + "'"
    if isinstance(value, date):
        return "'" + value.isoformat() + "'"
    raise TypeError(f"{type(value).__name__} value cannot be put in a FilterString")


def build_filter_string(filters: Mapping[str, Any] | None) -> str | None:
    """``{field: value}`` → FilterString joined by AND, built only from escaped literals.

    A list/tuple/set value becomes ``IN (...)``, None becomes ``IS NULL``. Returns None when a
    condition can match nothing (an empty list), so the caller need not ask Kingdee.
    """
    clauses = []
    for key, value in (filters or {}).items():
        validate_field_key(key)
        if value is None:
            clauses.append(f"{key} IS NULL")
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
            if not items:
                return None
            if any(item is None or isinstance(item, (list, tuple, set, frozenset, dict)) for item in items):
                raise TypeError(f"IN list of {key} may hold only scalar values")
            clauses.append(f"{key} IN ({','.join(filter_literal(item) for item in items)})")
        else:
            clauses.append(f"{key}={filter_literal(value)}")
    return " AND ".join(clauses)


def options_payload(options: Mapping[str, Any] | None) -> dict:
    """BatchSave options with booleans written as the official examples write them ("true")."""
    payload = {}
    for key, value in (options or {}).items():
        if key == "Model":
            raise ValueError("options may not carry Model")
        payload[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return payload


def batch_save_body(form_id: str, models: list[dict], options: Mapping[str, Any] | None = None) -> dict:
    for position, model in enumerate(models):
        if not isinstance(model, dict):
            raise TypeError(f"model {position} is a {type(model).__name__}, not a dict")
    return {"formid": form_id, "data": {**options_payload(options), "Model": models}}
