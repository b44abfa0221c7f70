"""Vectorised value parsing for the transform: missing values, money and China-time dates.

Everything here works on whole pandas Series; only the final Decimal step touches single values,
because pandas has no decimal arithmetic.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pandas as pd

CHINA_TZ = "Asia/Shanghai"
# Literal spellings DingTalk uses for "no value" (an empty form field's value is the string "null").
MISSING_SPELLINGS = ("", "null", "NULL", "None", "undefined")
# More integer digits than this is not a reimbursement; it would also overflow int64 cents.
MAX_INTEGER_DIGITS = 13

_MONEY = (r"^(?:¥|￥|RMB|CNY)?\s*(?P<sign>[+-]?)(?P<whole>\d{1,3}(?:,\d{3})+|\d+)"
          r"(?:\.(?P<frac>\d+))?\s*(?:元)?$")
_NAIVE_DATE = (r"(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})"
               r"(?:[ T](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.\d+)?)?)?")
_AWARE_DATE = r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})"


_MISSING = frozenset(MISSING_SPELLINGS)


def clean_text(value: object) -> str | None:
    """One value as a stripped string, or None for every missing spelling."""
    if value.__class__ is str:
        value = value.strip()
        return None if value in _MISSING else value
    if value is None or value is pd.NA or value != value:   # NaN is the only value unequal to itself
        return None
    text = str(value).strip()
    return None if text in _MISSING else text


def as_text(values: pd.Series) -> pd.Series:
    """Values as stripped strings (object dtype), with every missing spelling as None.

    One pass per value: pandas' own ``.str.strip()`` on object data is the same per-value loop, and
    the chain strip → isin → mask → astype measured three times slower.
    """
    return pd.Series([clean_text(v) for v in values.tolist()], index=values.index, dtype=object)


def _plain_cents(text: str | None) -> int | None:
    """Cents of the usual spelling ``\\d{1,13}(\\.\\d{1,2})?`` (``isdecimal`` is exactly ``\\d``: any
    Unicode decimal digit), else None. str methods instead of a regex: 40 % less time per value."""
    if text is None:
        return None
    whole, dot, frac = text.partition(".")
    if not whole.isdecimal() or len(whole) > MAX_INTEGER_DIGITS:
        return None
    if not dot:
        return int(whole) * 100
    if not frac.isdecimal() or len(frac) > 2:
        return None
    return int(whole) * 100 + int(frac.ljust(2, "0"))


def parse_money_cents(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Money strings → integer cents (nullable Int64) and a mask of present-but-unparseable values.

    Accepted: ``580``, ``1280.50``, ``1,280.50`` (proper thousands groups only), a leading ``¥``/``￥``/
    ``RMB``/``CNY`` and a trailing ``元``. More than two decimals are rounded half-up to the cent.
    Anything else (``1.280,50``, ``abc``, ``1,28``) is unparseable, never guessed.
    """
    text = as_text(values)
    # Fast path for the usual spelling (digits, up to two decimals), one pass of integer arithmetic;
    # the pandas string-method chain for the same took 2.5 times longer.
    cents = pd.Series([_plain_cents(v) for v in text.tolist()], index=values.index, dtype="Int64")
    rest = text.notna() & cents.isna()
    if not rest.any():
        return cents, rest.astype(bool)
    text = text[rest].astype("string")

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
    bad = pd.Series(False, index=values.index)
    bad[ok.index] = ~ok
    return cents, bad


def cents_to_decimal(cents: int) -> Decimal:
    return Decimal(int(cents)).scaleb(-2)


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
        out[present] = [str(cents_to_decimal(v).quantize(quantum, rounding=ROUND_HALF_UP)) for v in c]
    return out.where(present, None)


def parse_china_datetimes(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Date / datetime strings → naive China wall-clock datetimes, and a mask of bad values.

    DingTalk writes ``2024-03-06 09:01:02`` in China time without an offset (also ``2024-03-06``,
    ``2024/3/6``); values with ``Z`` / an offset, and Unix seconds or milliseconds, are converted to
    China time. Impossible dates (``2024-02-30``) are bad.
    """
    text = as_text(values).astype("string").str.replace("/", "-", regex=False)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    # Fast path for DingTalk's own two spellings (pandas' C parser); everything else below.
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        todo = text.notna() & out.isna()
        if todo.any():
            out[todo] = pd.to_datetime(text[todo], format=fmt, errors="coerce")
    rest = text[text.notna() & out.isna()]
    if rest.empty:
        return out, pd.Series(False, index=values.index)

    parts = rest.str.extract(f"^{_NAIVE_DATE}$")
    naive = parts["year"].notna()
    if naive.any():
        fields = parts[naive].fillna({"hour": "0", "minute": "0", "second": "0"}).astype("int64")
        # to_datetime would roll 25:00 over into the next day; an impossible time is a bad date.
        clock_ok = (fields["hour"] <= 23) & (fields["minute"] <= 59) & (fields["second"] <= 59)
        fields = fields[clock_ok]
        out[fields.index] = pd.to_datetime(fields[["year", "month", "day", "hour", "minute", "second"]],
                                           errors="coerce")

    aware = rest.str.fullmatch(_AWARE_DATE).fillna(False).astype(bool)
    if aware.any():
        stamps = pd.to_datetime(rest[aware], utc=True, format="ISO8601", errors="coerce")
        out[stamps.index] = stamps.dt.tz_convert(CHINA_TZ).dt.tz_localize(None)

    for pattern, unit in ((r"\d{13}", "ms"), (r"\d{10}", "s")):
        epoch = rest.str.fullmatch(pattern).fillna(False).astype(bool)
        if epoch.any():
            stamps = pd.to_datetime(rest[epoch].astype("int64"), unit=unit, utc=True)
            out[stamps.index] = stamps.dt.tz_convert(CHINA_TZ).dt.tz_localize(None)

    bad = text.notna().astype(bool) & out.isna()
    return out, bad
