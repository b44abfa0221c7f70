"""With events on, the hourly runs list and sweep less often and wait longer before a safety read."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
import pytest
from pydantic import ValidationError

from dingtalk_kingdee.pipeline.extract_hourly import FIRST_INTERVAL, listing_due, read_intervals, sweep_due, sweep_of
from dingtalk_kingdee.scheme import EventsSpec, Scheme, load_scheme
from dingtalk_kingdee.staging import Watermark

SCHEME = load_scheme(Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml")
EVENTS = SCHEME.model_copy(update={"events": EventsSpec(enabled=True, listing_every_hours=6, safety_reread_hours=48,
                                                        safety_reread_cap_hours=192, sweep_every_days=7,
                                                        sweep_window_days=3)})
NOW = pendulum.datetime(2026, 9, 10, 12, tz="Asia/Shanghai")


def test_without_events_every_hourly_run_lists_and_a_new_claim_is_read_after_an_hour():
    mark = Watermark(listed_until=NOW - timedelta(hours=1), swept_at=NOW - timedelta(hours=9))
    assert listing_due(NOW, mark, SCHEME)
    assert read_intervals(SCHEME) == (FIRST_INTERVAL, timedelta(hours=SCHEME.source.reread_cap_hours))


def test_with_events_the_listing_waits_its_hours_and_reads_wait_the_safety_intervals():
    assert not listing_due(NOW, Watermark(NOW - timedelta(hours=5), None), EVENTS)
    assert listing_due(NOW, Watermark(NOW - timedelta(hours=6), None), EVENTS)
    assert listing_due(NOW, None, EVENTS)  # the first run lists (the whole look-back)
    assert read_intervals(EVENTS) == (timedelta(hours=48), timedelta(hours=192))


def test_with_events_the_sweep_comes_every_few_days_at_the_sweep_hour():
    three_am = NOW.replace(hour=3)
    day = timedelta(days=1)
    assert sweep_due(three_am, Watermark(three_am, three_am - day), 3)            # daily without events
    assert not sweep_due(three_am, Watermark(three_am, three_am - day), 3, every_days=7)
    assert not sweep_due(three_am, Watermark(three_am, three_am - 6 * day), 3, every_days=7)
    assert sweep_due(three_am, Watermark(three_am, three_am - 7 * day), 3, every_days=7)
    assert sweep_due(NOW, Watermark(NOW, three_am - 7 * day), 3, every_days=7)     # a missed slot is made up


DAY = timedelta(days=1)
THREE_AM = NOW.replace(hour=3)
LOOKBACK_START = THREE_AM - 30 * DAY


def test_with_events_a_short_sweep_of_the_last_days_comes_every_night_at_the_sweep_hour():
    mark = Watermark(THREE_AM - timedelta(hours=2), swept_at=THREE_AM - 3 * DAY, recent_swept_at=THREE_AM - DAY)
    sweep = sweep_of(THREE_AM, mark, EVENTS, LOOKBACK_START)
    assert sweep is not None and not sweep.whole
    assert sweep.start == THREE_AM - 3 * DAY  # events.sweep_window_days
    # Not before the sweep hour, not twice the same night.
    assert sweep_of(THREE_AM - timedelta(hours=1), mark, EVENTS, LOOKBACK_START) is None
    swept = Watermark(THREE_AM, swept_at=THREE_AM - 3 * DAY, recent_swept_at=THREE_AM)
    assert sweep_of(THREE_AM + timedelta(hours=1), swept, EVENTS, LOOKBACK_START) is None


def test_with_events_the_whole_look_back_is_swept_every_sweep_every_days_instead_of_that_nights_short_one():
    mark = Watermark(THREE_AM - timedelta(hours=2), swept_at=THREE_AM - 7 * DAY, recent_swept_at=THREE_AM - DAY)
    sweep = sweep_of(THREE_AM, mark, EVENTS, LOOKBACK_START)
    assert sweep is not None and sweep.whole and sweep.start == LOOKBACK_START
    # A whole sweep is a short sweep too: the next night's is short again.
    after = Watermark(THREE_AM, swept_at=THREE_AM, recent_swept_at=THREE_AM - DAY)
    assert sweep_of(THREE_AM + timedelta(hours=5), after, EVENTS, LOOKBACK_START) is None
    nxt = sweep_of(THREE_AM + DAY, after, EVENTS, LOOKBACK_START + DAY)
    assert nxt is not None and not nxt.whole


def test_a_missed_night_is_made_up_by_the_next_run_and_a_short_sweep_never_leaves_a_gap_behind_the_watermark():
    missed = Watermark(THREE_AM - timedelta(hours=2), swept_at=THREE_AM - 3 * DAY, recent_swept_at=THREE_AM - 2 * DAY)
    sweep = sweep_of(NOW, missed, EVENTS, NOW - 30 * DAY)   # 12:00, the 03:00 run did not happen
    assert sweep is not None and not sweep.whole
    # The listing failed for five days: the short sweep starts where the watermark stands (less the
    # overlap), so nothing started in between goes unlisted.
    stale = Watermark(THREE_AM - 5 * DAY, swept_at=THREE_AM - 3 * DAY, recent_swept_at=THREE_AM - DAY)
    sweep = sweep_of(THREE_AM, stale, EVENTS, LOOKBACK_START)
    overlap = timedelta(minutes=EVENTS.source.listing_overlap_minutes)
    assert sweep is not None and sweep.start == THREE_AM - 5 * DAY - overlap


def test_without_events_the_nightly_sweep_is_always_the_whole_look_back():
    mark = Watermark(THREE_AM - timedelta(hours=1), swept_at=THREE_AM - DAY)
    sweep = sweep_of(THREE_AM, mark, SCHEME, LOOKBACK_START)
    assert sweep is not None and sweep.whole and sweep.start == LOOKBACK_START
    assert sweep_of(THREE_AM, None, SCHEME, LOOKBACK_START) is None  # the first run lists it all anyway


def with_events(**events) -> Scheme:
    return Scheme.model_validate({**SCHEME.model_dump(), "events": {"enabled": True, **events}})


def test_the_short_sweep_window_is_checked_against_the_look_back():
    with pytest.raises(ValidationError, match="sweep_window_days"):
        with_events(sweep_window_days=30)  # the look-back is 30 days: that is the whole sweep
    with pytest.raises(ValidationError, match="sweep_window_days"):
        with_events(sweep_window_days=0)
    assert with_events(sweep_window_days=7).events.sweep_window_days == 7
    assert with_events().events.sweep_window_days == 3
