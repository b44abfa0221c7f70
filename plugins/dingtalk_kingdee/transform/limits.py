"""Bounds on what one claim's data may be, so that no claim can stop the others.

A claim beyond any of them is rejected ``malformed_payload`` with a reason naming the claim and the
field; parsing never recurses without a bound (Python's and msgspec's JSON decoders recurse once per
nesting level and raise ``RecursionError`` near 1,000 levels, which is caught and named here).
"""

from __future__ import annotations

import json
from typing import Any

# Nesting of one JSON value: a DingTalk table is 4 levels deep (rows, row, cells, cell) and a cell's
# extendValue a few more; 64 leaves room for any real form and stays far from the recursion limit.
MAX_JSON_DEPTH = 64
# Table levels: a table (level 1), a table cell in its rows (level 2), and so on.
MAX_TABLE_LEVELS = 5
# Characters of one form or table value: a claim of 200 rows is about 500,000.
MAX_VALUE_CHARS = 2_000_000
# Characters of a payload given as JSON text.
MAX_PAYLOAD_CHARS = 20_000_000

TOO_DEEP = f"is nested too deeply (more than {MAX_JSON_DEPTH} levels)"


class RepeatedKey(ValueError):
    """An object with the same key twice: which value DingTalk showed the approver is unknown."""


def _pairs_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RepeatedKey(f'has the repeated key "{shorten(key)}" in one object')
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def too_long(text: str, limit: int = MAX_VALUE_CHARS) -> str | None:
    """Why the text is too long, or None."""
    if len(text) > limit:
        return f"is {len(text):,} characters, over the limit of {limit:,}"
    return None


def loads_strict(text: str | bytes) -> tuple[Any, str | None]:
    """JSON text → (value, None), or (None, what is wrong): not JSON, a repeated key, nested too deeply.

    Python's decoder (with a per-object hook) is used for the exact repeated-key check; callers use it
    only when the fast decoding cannot vouch for the text.
    """
    try:
        value = json.loads(text, object_pairs_hook=_pairs_once, parse_constant=_no_constant)
    except RepeatedKey as exc:
        return None, str(exc)
    except RecursionError:
        return None, TOO_DEEP
    except ValueError as exc:
        return None, f"is not valid JSON ({shorten(str(exc))})"
    if exceeds_depth(value):
        return None, TOO_DEEP
    return value, None


def exceeds_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a decoded value nests lists / dicts more than ``limit`` deep (iterative: no recursion)."""
    if value.__class__ is not list and value.__class__ is not dict:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if item.__class__ is dict else item
        for child in children:
            if child.__class__ is list or child.__class__ is dict:
                stack.append((child, depth + 1))
    return False


def shorten(value: object, limit: int = 60) -> str:
    """A value as text for a log line or a reason: at most ``limit`` characters, then an ellipsis."""
    text = value if value.__class__ is str else str(value)
    return text if len(text) <= limit else text[:limit] + "…"
