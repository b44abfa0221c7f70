"""The one normal form of a business_id (DingTalk's approval number), for the transform and the
duplicate check alike.

A business_id becomes the bill's match value (``FTHIRDBILLNO``) and its number, so the form the
duplicate check compares and the form the bill carries must be the same: ``"TSP1 "`` is ``TSP1``.
Normal form: the text stripped of surrounding white space, printable ASCII only (DingTalk's numbers
are digits; a NUL or control character cannot be stored in PostgreSQL text nor sent in a Kingdee
FilterString), at most ``MAX_CHARS`` characters. Duplicates are found case-insensitively
(``duplicate_key``): Kingdee's database usually compares text without case, so ``tsp1`` would find
``TSP1``'s bill.
"""

from __future__ import annotations

import pandas as pd

from dingtalk_kingdee.transform.limits import shorten
from dingtalk_kingdee.transform.values import clean_text

MAX_CHARS = 128


def normal_form(value: object) -> tuple[str | None, str | None]:
    """A business_id → (its normal form, None), (None, None) when missing, or (None, what is wrong)."""
    text = clean_text(value)
    if text is None:
        return None, None
    if len(text) > MAX_CHARS:
        return None, f"is {len(text):,} characters, over the limit of {MAX_CHARS}"
    if not (text.isascii() and text.isprintable()):
        bad = next(c for c in text if not (c.isascii() and c.isprintable()))
        return None, (f'"{shorten(text.encode("unicode_escape").decode("ascii"))}" has the character '
                      f"U+{ord(bad):04X}; only printable ASCII is accepted")
    return text, None


def normal_forms(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``normal_form`` over a Series: (normal forms or None, problems or None), on the same index."""
    pairs = [normal_form(v) for v in values.tolist()]
    return (pd.Series([p[0] for p in pairs], index=values.index, dtype=object),
            pd.Series([p[1] for p in pairs], index=values.index, dtype=object))


def duplicate_key(business_id: str) -> str:
    """What two business_ids share when they are the same approval number (already normal)."""
    return business_id.upper()


def lookup_ids(payloads: list[object]) -> list[str]:
    """The normal business_ids of raw payloads, to ask staging which of them already have a bill."""
    out = []
    for payload in payloads:
        if isinstance(payload, dict):
            normal, _ = normal_form(payload.get("business_id"))
            if normal is not None:
                out.append(normal)
    return out
