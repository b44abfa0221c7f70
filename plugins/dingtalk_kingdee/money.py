"""Money, one way everywhere: amounts are ``Decimal`` in code and integer cents in staging.

Kingdee holds CNY amounts to the cent; an amount that does not fit exactly is refused, never rounded.
This module is the one place that reads money text (``parse_money_cents``), converts between
``Decimal`` and cents (``to_cents`` / ``from_cents``) and writes amounts as text (``format_cents``).
The text functions work on whole pandas Series: the transform parses a chunk's amounts at once.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

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


def parse_money_cents(texts: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Money texts → integer cents (nullable Int64) and a mask of present-but-unparseable values.

    ``texts``: strings (numbers are read as their text), missing values as None or NaN. The source's
    own spellings of "no value" (DingTalk's ``"null"``) are the caller's to recognise: the transform
    hands over ``as_text`` output, stripped strings or None.
    Accepted: ``580``, ``1280.50``, ``1,280.50`` (proper thousands groups only), a leading ``¥``/``￥``/
    ``RMB``/``CNY`` and a trailing ``元``. More than two decimals are rounded half-up to the cent.
    Anything else (``1.280,50``, ``abc``, ``1,28``) is unparseable, never guessed.
    """
    # Fast path for the usual spelling (digits, up to two decimals), one pass of integer arithmetic;
    # the pandas string-method chain for the same took 2.5 times longer.
    cents = pd.Series([_plain_cents(v) for v in texts.tolist()], index=texts.index, dtype="Int64")
    rest = texts.notna() & cents.isna()
    if not rest.any():
        return cents, rest.astype(bool)
    text = texts[rest].astype("string")

    parts = text.str.extract(_MONEY)
    ok = parts["whole"].notna()
    parts = parts[ok]
    whole = parts["whole"].str.replace(",", "", regex=False)
    sane = whole.str.len() <= MAX_INTEGER_DIGITS
    ok[sane.index[~sane]] = False
    parts, whole = parts[sane], whole[sane]
    frac = parts["frac"].fillna("")
    # Exact integer arithmetic on the digits for the usual ≤ 2 decimals; Decimal rounding otherwise.
    short = frac.str.len() <= 2
    if short.any():
        magnitude = whole[short].astype("int64") * 100 + frac[short].str.ljust(2, "0").astype("int64")
        cents[magnitude.index] = magnitude.where(parts.loc[short, "sign"] != "-", -magnitude).to_numpy()
    if (~short).any():
        cent = Decimal(1)
        long_ = ~short
        cents[whole.index[long_]] = [
            int((Decimal(f"{sign}{w}.{f}") * 100).quantize(cent, rounding=ROUND_HALF_UP))
            for sign, w, f in zip(parts.loc[long_, "sign"], whole[long_], frac[long_], strict=True)]
    bad = pd.Series(False, index=texts.index)
    bad[ok.index] = ~ok
    return cents, bad


def format_cents(cents: pd.Series, places: int = 2) -> pd.Series:
    """Integer cents → decimal strings such as ``"580.00"`` (None where missing)."""
    out = pd.Series(None, index=cents.index, dtype=object)
    present = cents.notna()
    if not present.any():
        return out
    c = cents[present].astype("int64")
    if places == 2:
        out[present] = [f"{'-' if v < 0 else ''}{abs(v) // 100}.{abs(v) % 100:02d}" for v in c.tolist()]
    else:
        quantum = Decimal(1).scaleb(-places)
        out[present] = [str(from_cents(v).quantize(quantum, rounding=ROUND_HALF_UP)) for v in c.tolist()]
    return out.where(present, None)
