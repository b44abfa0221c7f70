"""With events on, the hourly runs list and sweep less often and wait longer before a safety read."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum

from dingtalk_kingdee.pipeline.extract_hourly import FIRST_INTERVAL, listing_due, read_intervals, sweep_due
from dingtalk_kingdee.scheme import EventsSpec, load_scheme
from dingtalk_kingdee.staging import Watermark

SCHEME = load_scheme(Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml")
EVENTS = SCHEME.model_copy(update={"events": EventsSpec(enabled=True, listing_every_hours=6, safety_reread_hours=48,
                                                        safety_reread_cap_hours=192, sweep_every_days=7)})
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
