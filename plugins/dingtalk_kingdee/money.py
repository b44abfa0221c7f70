"""Money, one way everywhere: amounts are ``Decimal`` in code and integer cents in staging.

Kingdee holds CNY amounts to the cent; an amount that does not fit exactly is refused, never rounded.
This module is the one place that reads money text (``parse_money_cents``), sums cents exactly
(``sum_cents``), converts between
``Decimal`` and cents (``to_cents`` / ``from_cents``) and writes amounts as text (``format_cents``).
The text functions work on whole pandas Series: the transform parses a chunk's amounts at once.
"""

from __future__ import annotations

from collections.abc import Hashable
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

import pandas as pd

CENT = Decimal("0.01")
# More integer digits than this is not a reimbursement; it would also overflow int64 cents.
MAX_INTEGER_DIGITS = 13

_MONEY = (r"^\s*(?:¥|￥|RMB|CNY)?\s*(?P<sign>[+-]?)(?P<whole>\d{1,3}(?:,\d{3})+|\d+)"
          r"(?:\.(?P<frac>\d+))?\s*(?:元)?\s*$")


def to_cents(amount: Decimal) -> int:
    """``Decimal("1280.50")`` → ``128050``; more than two decimal places is an error, not a rounding."""
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"amount {amount} has more than two decimal places")
    return int(cents)


def from_cents(cents: int | None) -> Decimal:
    """``128050`` → ``Decimal("1280.50")`` (always two places; None counts as zero)."""
    return Decimal(int(cents or 0)).scaleb(-2).quantize(CENT)


def _plain_cents(text: object) -> int | None:
    """Cents of the usual spelling ``\\d{1,13}(\\.\\d{1,2})?`` (``isdecimal`` is exactly ``\\d``: any
    Unicode decimal digit), else None. str methods instead of a regex: 40 % less time per value."""
    if text.__class__ is not str:
        return None
    whole, dot, frac = text.partition(".")
    if not whole.isdecimal() or len(whole) > MAX_INTEGER_DIGITS:
        return None
    if not dot:
        return int(whole) * 100
    if not frac.isdecimal() or len(frac) > 2:
        return None
    return int(whole) * 100 + int(frac.ljust(2, "0"))


class ParsedMoney(NamedTuple):
    cents: pd.Series      # integer cents (nullable Int64); missing where absent, bad or finer than a cent
    bad: pd.Series        # present but not an amount
    sub_cent: pd.Series   # an amount, but not a whole number of cents (Kingdee cannot hold it)


def parse_money_cents(texts: pd.Series) -> ParsedMoney:
    """Money texts → integer cents (nullable Int64), a mask of present-but-unparseable values and a
    mask of amounts finer than a cent.

    ``texts``: strings (numbers are read as their text), missing values as None or NaN. The source's
    own spellings of "no value" (DingTalk's ``"null"``) are the caller's to recognise: the transform
    hands over ``as_text`` output, stripped strings or None.
    Accepted: ``580``, ``1280.50``, ``1,280.50`` (proper thousands groups only), a leading ``¥``/``￥``/
    ``RMB``/``CNY`` and a trailing ``元``. Decimals beyond the second must be zeros (``1280.500``);
    ``0.005``, ``1280.505`` or a JSON float's ``0.30000000000000004`` is ``sub_cent``: never rounded.
    Anything else (``1.280,50``, ``abc``, ``1,28``) is unparseable, never guessed.
    """
    # Fast path for the usual spelling (digits, up to two decimals), one pass of integer arithmetic;
    # the pandas string-method chain for the same took 2.5 times longer.
    cents = pd.Series([_plain_cents(v) for v in texts.tolist()], index=texts.index, dtype="Int64")
    rest = texts.notna() & cents.isna()
    sub_cent = pd.Series(False, index=texts.index)
    if not rest.any():
        return ParsedMoney(cents, rest.astype(bool), sub_cent)
    text = texts[rest].astype("string")

    parts = text.str.extract(_MONEY)
    ok = parts["whole"].notna()
    parts = parts[ok]
    whole = parts["whole"].str.replace(",", "", regex=False)
    sane = whole.str.len() <= MAX_INTEGER_DIGITS
    ok[sane.index[~sane]] = False
    parts, whole = parts[sane], whole[sane]
    frac = parts["frac"].fillna("")
    # Exact integer arithmetic on the digits: beyond the second decimal only zeros are exact cents.
    extra = frac.str.slice(2)
    exact = extra.str.fullmatch("0*").fillna(True).astype(bool)
    sub_cent[extra.index[~exact]] = True
    whole, frac, parts = whole[exact], frac[exact].str.slice(0, 2), parts[exact]
    if not whole.empty:
        magnitude = whole.astype("int64") * 100 + frac.str.ljust(2, "0").astype("int64")
        cents[magnitude.index] = magnitude.where(parts["sign"] != "-", -magnitude).to_numpy()
    bad = pd.Series(False, index=texts.index)
    bad[ok.index] = ~ok
    return ParsedMoney(cents, bad, sub_cent)


def sum_cents(keys: pd.Series, cents: pd.Series) -> pd.Series:
    """Cents summed per key, exactly (Python integers: a claim's rows may add up beyond 64 bits);
    a key whose cents are all missing sums to None. Indexed by key, object dtype."""
    totals: dict[Hashable, int | None] = {}
    for key, value in zip(keys.tolist(), cents.tolist(), strict=True):
        if value is None or value is pd.NA:
            totals.setdefault(key, None)
        else:
            total = totals.get(key)
            totals[key] = int(value) if total is None else total + int(value)
    return pd.Series(totals, dtype=object)


def format_cents(cents: pd.Series, places: int = 2) -> pd.Series:
    """Integer cents → decimal strings such as ``"580.00"`` (None where missing)."""
    out = pd.Series(None, index=cents.index, dtype=object)
    present = cents.notna()
    if not present.any():
        return out
    c = [int(v) for v in cents[present].tolist()]   # Python integers: exact beyond 64 bits too
    if places == 2:
        out[present] = [f"{'-' if v < 0 else ''}{abs(v) // 100}.{abs(v) % 100:02d}" for v in c]
    else:
        quantum = Decimal(1).scaleb(-places)
        out[present] = [str(from_cents(v).quantize(quantum, rounding=ROUND_HALF_UP)) for v in c]
    return out.where(present, None)
