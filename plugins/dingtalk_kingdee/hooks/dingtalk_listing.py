"""Time windows of the listids API: epoch milliseconds, ≤120-day slices, halving a capped slice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# listids limits (reference: "List instance ids")
LIST_PAGE_SIZE = 20
LIST_MAX_SPAN_MS = 120 * 24 * 3600 * 1000
LIST_MAX_AGE = timedelta(days=365)
LIST_END_LAG = timedelta(minutes=1)
LIST_ID_CAP = 10_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_epoch_ms(moment: datetime) -> int:
    # Rebuilt as a plain datetime: subclasses such as pendulum's (Airflow's context) do their own
    # arithmetic, which mixes badly with the standard library's timedelta.
    utc = moment.astimezone(UTC)
    plain = datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC)
    return (plain - _EPOCH) // timedelta(milliseconds=1)


def ms_iso(epoch_ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=epoch_ms)).isoformat(timespec="seconds")


def slice_window(start_ms: int, end_ms: int, max_span_ms: int = LIST_MAX_SPAN_MS) -> list[tuple[int, int]]:
    """Cut [start, end] into consecutive slices no longer than ``max_span_ms``.

    Neighbouring slices share their boundary millisecond: an instance started exactly there is
    listed twice and de-duplicated, rather than lost to an inclusive/exclusive mismatch.
    """
    if end_ms <= start_ms:
        return []
    slices = []
    lower = start_ms
    while lower < end_ms:
        upper = min(lower + max_span_ms, end_ms)
        slices.append((lower, upper))
        lower = upper
    return slices


def split_slice(start_ms: int, end_ms: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Halve a slice that hit the per-query id cap; None when it cannot be cut any finer."""
    if end_ms - start_ms < 2:
        return None
    middle = start_ms + (end_ms - start_ms) // 2
    return (start_ms, middle), (middle, end_ms)


def check_window(start: datetime, end: datetime, now: datetime) -> datetime:
    """Refuse what DingTalk cannot list; return ``end`` kept a minute behind ``now``."""
    for name, moment in (("start", start), ("end", end)):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name}={moment.isoformat()} is naive: pass a timezone-aware datetime")
    if start < now - LIST_MAX_AGE:
        raise ValueError(
            f"start={start.isoformat()} is more than 365 days ago; DingTalk lists instances "
            "started within the last 365 days only")
    return min(end, now - LIST_END_LAG)
