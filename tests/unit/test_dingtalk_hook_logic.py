"""Pure pieces of the DingTalk hook: answer classification, slicing, backoff, rate limiter, tokens."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dingtalk_kingdee.hooks import dingtalk_listing, dingtalk_pacing
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook
from dingtalk_kingdee.hooks.dingtalk_answers import Verdict, classify_answer, effective_errcode
from dingtalk_kingdee.hooks.dingtalk_config import DingTalkConnectionConfig
from dingtalk_kingdee.hooks.dingtalk_listing import slice_window, split_slice
from dingtalk_kingdee.hooks.dingtalk_pacing import RateLimiter, TokenCache
from dingtalk_kingdee.hooks.transport import backoff_delay, redaction


def _json(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# ---- classification -----------------------------------------------------------------------


def test_ok_answer_keeps_body() -> None:
    answer = classify_answer(200, _json({"errcode": 0, "errmsg": "ok", "result": {"list": ["a"]}}))
    assert answer.verdict is Verdict.OK
    assert answer.body["result"]["list"] == ["a"]


@pytest.mark.parametrize("code", [40001, 40014, 42001, 33001])
def test_token_codes_plain_and_wrapped_mean_token_invalid(code: int) -> None:
    plain = classify_answer(200, _json({"errcode": code, "errmsg": "不合法的access_token"}))
    wrapped = classify_answer(200, _json({"errcode": 88, "sub_code": str(code), "sub_msg": "x",
                                          "errmsg": f"ding talk error[subcode={code}]"}))
    assert plain.verdict is Verdict.TOKEN_INVALID
    assert wrapped.verdict is Verdict.TOKEN_INVALID
    assert wrapped.errcode == 88 and wrapped.sub_code == str(code)


@pytest.mark.parametrize("body", [
    {"errcode": 90018, "errmsg": "超出了该接口承受的最大qps"},
    {"errcode": 88, "sub_code": "90018", "sub_msg": "限制将在 2024-03-06 09:01:03 结束."},
    {"errcode": 90002, "errmsg": "global"},
    {"errcode": 88, "sub_code": "90002", "errmsg": "global"},
])
def test_throttle_codes_are_throttled(body: dict) -> None:
    answer = classify_answer(200, _json(body))
    assert answer.verdict is Verdict.THROTTLED
    assert answer.maybe_processed is False


def test_busy_minus_one() -> None:
    assert classify_answer(200, _json({"errcode": -1, "errmsg": "系统繁忙"})).verdict is Verdict.BUSY


@pytest.mark.parametrize("body", [
    {"errcode": 90020, "errmsg": "当月调用次数已达上限"},
    {"errcode": 88, "sub_code": "90020", "errmsg": "quota"},
    {"errcode": 40096, "errmsg": "不合法的appKey或appSecret"},
    {"errcode": 400002, "errmsg": "审批模板不存在"},
    {"errcode": 88, "sub_code": "isv.invalid-parameter", "sub_msg": "bad"},
])
def test_permanent_errors(body: dict) -> None:
    answer = classify_answer(200, _json(body))
    assert answer.verdict is Verdict.PERMANENT
    assert answer.errcode == body["errcode"]


def test_wrapped_error_message_prefers_sub_msg() -> None:
    answer = classify_answer(200, _json({"errcode": 88, "sub_code": "40096", "sub_msg": "坏密钥",
                                         "errmsg": "ding talk error"}))
    assert answer.errmsg == "坏密钥"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_gateway_errors_are_transient_whatever_the_body(status: int) -> None:
    assert classify_answer(status, b"<html>502 Bad Gateway</html>").verdict is Verdict.TRANSIENT
    assert classify_answer(status, _json({"errcode": 0})).verdict is Verdict.TRANSIENT


def test_html_ban_page_is_banned() -> None:
    answer = classify_answer(200, "<!DOCTYPE html><html><body>访问被拒绝</body></html>".encode())
    assert answer.verdict is Verdict.BANNED
    assert answer.wait is None  # the client's own ban wait applies


def test_ban_json_is_banned_with_its_wait() -> None:
    answer = classify_answer(200, _json({"status": 1111, "wait": 5, "source": "x5", "punish": "deny"}))
    assert answer.verdict is Verdict.BANNED
    assert answer.wait == 5.0


@pytest.mark.parametrize("content", [
    b'{"errcode":0,"errmsg":"ok","result":{"list":["',
    b"",
    b"[1, 2]",
    b'{"result": {}}',
    b'{"errcode": "zero"}',
])
def test_malformed_answers_are_transient(content: bytes) -> None:
    assert classify_answer(200, content).verdict is Verdict.TRANSIENT


def test_client_error_without_json_is_permanent() -> None:
    answer = classify_answer(404, b"Not Found")
    assert answer.verdict is Verdict.PERMANENT
    assert answer.errcode == 404


def test_http_429_is_throttling() -> None:
    assert classify_answer(429, b"Too Many Requests").verdict is Verdict.THROTTLED


def test_effective_errcode() -> None:
    assert effective_errcode(88, "40014") == 40014
    assert effective_errcode(88, " 90018 ") == 90018
    assert effective_errcode(88, "isv.x") is None
    assert effective_errcode(88, None) == 88
    assert effective_errcode(40014, None) == 40014


# ---- backoff -------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_equal_jitter() -> None:
    assert backoff_delay(1, 0.5, 10, rng=lambda: 0.0) == 0.25
    assert backoff_delay(1, 0.5, 10, rng=lambda: 1.0) == 0.5
    assert backoff_delay(3, 0.5, 10, rng=lambda: 0.0) == 1.0
    assert backoff_delay(3, 0.5, 10, rng=lambda: 1.0) == 2.0


def test_backoff_is_capped() -> None:
    assert backoff_delay(30, 0.5, 10, rng=lambda: 1.0) == 10
    assert backoff_delay(30, 0.5, 10, rng=lambda: 0.0) == 5


# ---- slicing -------------------------------------------------------------------------------


DAY_MS = 24 * 3600 * 1000


def test_window_within_limit_is_one_slice() -> None:
    assert slice_window(0, 30 * DAY_MS) == [(0, 30 * DAY_MS)]


def test_long_window_is_cut_into_120_day_slices() -> None:
    slices = slice_window(0, 300 * DAY_MS)
    assert slices == [(0, 120 * DAY_MS), (120 * DAY_MS, 240 * DAY_MS), (240 * DAY_MS, 300 * DAY_MS)]


def test_empty_or_inverted_window_has_no_slices() -> None:
    assert slice_window(5, 5) == []
    assert slice_window(10, 5) == []


@given(st.integers(0, 10**13), st.integers(1, 10**11), st.integers(1, 400))
def test_slices_cover_the_window_contiguously(start: int, length: int, pieces: int) -> None:
    span = max(1, length // pieces)
    slices = slice_window(start, start + length, span)
    assert slices[0][0] == start
    assert slices[-1][1] == start + length
    for (_, upper), (next_lower, _) in itertools.pairwise(slices):
        assert upper == next_lower
    assert all(0 < upper - lower <= span for lower, upper in slices)


def test_split_slice_halves() -> None:
    assert split_slice(0, 10) == ((0, 5), (5, 10))
    assert split_slice(0, 3) == ((0, 1), (1, 3))
    assert split_slice(7, 8) is None


def test_epoch_ms_is_exact() -> None:
    moment = datetime(2024, 3, 6, 1, 1, 2, 345000, tzinfo=UTC)
    assert dingtalk_listing.to_epoch_ms(moment) == 1709686862345


# ---- rate limiter --------------------------------------------------------------------------


def test_limiter_spaces_calls_by_the_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    delays = [limiter.reserve() for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20])


def test_limiter_does_not_bank_idle_time_into_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    limiter.reserve()
    clock.now += 60  # a minute idle
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == pytest.approx(0.1)


def test_limiter_rate_over_many_acquires() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(201):
        limiter.acquire()
    assert clock.now - start == pytest.approx(10.0)  # 200 intervals of 50 ms


def test_penalty_blocks_every_caller() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    limiter.reserve()
    limiter.penalize(1.0)
    assert limiter.reserve() == pytest.approx(1.0)
    assert limiter.reserve() == pytest.approx(1.05)


def test_penalty_imposed_during_a_wait_voids_the_slot() -> None:
    clock = FakeClock()

    def sleep_and_get_throttled(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now < 1000.5:
            limiter.penalize(2.0)  # another thread hit 90018 while this one waited

    limiter = RateLimiter(10, clock=clock, sleep=sleep_and_get_throttled)
    limiter.reserve()
    limiter.acquire()
    assert clock.now >= 1000.1 + 2.0


def test_limiter_refuses_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_shared_limiter_is_per_app_and_api_and_paces_under_the_budget() -> None:
    first = dingtalk_pacing.shared_limiter("http://h", "app-unit", "processinstance/get", 20)
    again = dingtalk_pacing.shared_limiter("http://h", "app-unit", "processinstance/get", 20)
    other_api = dingtalk_pacing.shared_limiter("http://h", "app-unit", "processinstance/listids", 20)
    other_app = dingtalk_pacing.shared_limiter("http://h", "app-unit-2", "processinstance/get", 20)
    assert first is again
    assert first is not other_api and first is not other_app
    assert 0.9 * 20 <= first.rate <= 20


def test_default_workers_cover_the_budget_at_high_latency() -> None:
    # throughput ceiling = workers / latency; must exceed the budget at 200 ms
    assert dingtalk_pacing.default_workers(20) / 0.2 >= 20
    assert dingtalk_pacing.default_workers(20) / 0.5 >= 20
    assert dingtalk_pacing.default_workers(1) >= 4


# ---- tokens --------------------------------------------------------------------------------


def test_token_refresh_margin() -> None:
    assert dingtalk_pacing.token_refresh_after(7200) == 6900
    assert dingtalk_pacing.token_refresh_after(2) == pytest.approx(1.8)


def test_token_cache_reuses_then_refreshes_before_expiry() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    fetched = iter(["t1", "t2"])
    key = ("http://h", "app")
    assert cache.get(key, lambda: (next(fetched), 100)) == "t1"
    clock.now += 80
    assert cache.get(key, lambda: (next(fetched), 100)) == "t1"
    clock.now += 11  # 91 s: inside the refresh margin (10 s) of a 100 s token
    assert cache.get(key, lambda: (next(fetched), 100)) == "t2"


def test_token_invalidate_only_drops_the_failed_token() -> None:
    cache = TokenCache(clock=FakeClock())
    key = ("http://h", "app")
    cache.get(key, lambda: ("fresh", 7200))
    cache.invalidate(key, "stale-one-another-thread-used")
    assert cache.get(key, lambda: ("never", 7200)) == "fresh"
    cache.invalidate(key, "fresh")
    assert cache.get(key, lambda: ("new", 7200)) == "new"


def test_concurrent_callers_fetch_the_token_once() -> None:
    cache = TokenCache()
    key = ("http://h", "app")
    fetches = []
    gate = threading.Event()

    def slow_fetch() -> tuple[str, float]:
        fetches.append(1)
        gate.wait(1)
        return "tok", 7200

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(key, slow_fetch))) for _ in range(8)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()
    assert results == ["tok"] * 8
    assert len(fetches) == 1


# ---- secrets -------------------------------------------------------------------------------


def test_redact_masks_query_parameters_and_known_secrets() -> None:
    url = "http://127.0.0.1:1/topapi/processinstance/get?access_token=abc123def&x=1"
    assert "abc123def" not in redaction.redact(url)
    assert "access_token=***" in redaction.redact(url)
    assert "s3cret" not in redaction.redact("/gettoken?appkey=k&appsecret=s3cret")
    redaction.register_secret("unit-known-secret-value")
    assert redaction.redact("boom unit-known-secret-value boom") == "boom *** boom"


def test_urllib3_request_lines_are_masked() -> None:
    record = logging.LogRecord("urllib3.connectionpool", logging.DEBUG, __file__, 1,
                               '%s://%s:%s "%s %s %s" %s %s',
                               ("http", "h", 1, "POST", "/topapi/x?access_token=tok999", "HTTP/1.1", 200, 10),
                               None)
    redaction.url_log_filter.filter(record)
    assert "tok999" not in record.getMessage()


# ---- hook surface --------------------------------------------------------------------------


def test_hook_identity() -> None:
    assert DingTalkHook.conn_name_attr == "dingtalk_conn_id"
    assert DingTalkHook.default_conn_name == "dingtalk_default"
    assert DingTalkHook.conn_type == "dingtalk"
    assert DingTalkHook.hook_name == "DingTalk Approval (OA)"


@pytest.mark.parametrize(("host", "expected"), [
    ("", "https://oapi.dingtalk.com"),
    (None, "https://oapi.dingtalk.com"),
    ("oapi.dingtalk.com", "https://oapi.dingtalk.com"),
    ("http://127.0.0.1:8801/", "http://127.0.0.1:8801"),
])
def test_base_url(host: str | None, expected: str) -> None:
    conn = SimpleNamespace(conn_id="c", host=host, schema=None, port=None, login="k", password="s", extra_dejson={})
    assert DingTalkConnectionConfig.from_connection(conn).base_url == expected


def test_the_rate_limit_redis_comes_from_the_extra_else_the_setting(monkeypatch) -> None:
    def config(extra: dict) -> DingTalkConnectionConfig:
        conn = SimpleNamespace(conn_id="c", host=None, schema=None, port=None, login="k", password="s",
                               extra_dejson=extra)
        return DingTalkConnectionConfig.from_connection(conn)

    monkeypatch.delenv("DK_RATE_LIMIT_REDIS_URL", raising=False)
    assert config({}).rate_limit_redis_url == ""
    monkeypatch.setenv("DK_RATE_LIMIT_REDIS_URL", "redis://shared:6379/1")
    assert config({}).rate_limit_redis_url == "redis://shared:6379/1"
    assert config({"rate_limit_redis_url": "redis://own:6379/2"}).rate_limit_redis_url == "redis://own:6379/2"
    assert config({"rate_limit_redis_url": "local"}).rate_limit_redis_url == ""


def test_the_password_of_the_rate_limit_redis_is_masked(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DINGTALK_REDIS_UNIT", json.dumps({
        "conn_type": "dingtalk", "login": "k", "password": "app-secret-unit",
        "extra": {"rate_limit_redis_url": "redis://:redis-pw-unit-7@127.0.0.1:6379/1"}}))
    DingTalkHook("dingtalk_redis_unit").config  # noqa: B018 - reading the connection registers its secrets
    assert "redis-pw-unit-7" not in redaction.redact("redis://:redis-pw-unit-7@127.0.0.1:6379/1 refused")


def test_naive_datetimes_are_refused() -> None:
    hook = DingTalkHook("unused")
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="naive"):
        hook.list_instance_ids("PROC-X", now.replace(tzinfo=None) - timedelta(days=1), now)
    with pytest.raises(ValueError, match="naive"):
        hook.list_instance_ids("PROC-X", now - timedelta(days=1), now.replace(tzinfo=None))


def test_start_older_than_365_days_is_refused() -> None:
    hook = DingTalkHook("unused")
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="365 days"):
        hook.list_instance_ids("PROC-X", now - timedelta(days=366), now)


# ---- listing logic over a scripted transport ------------------------------------------------


class ScriptedListing(DingTalkHook):
    """A hook whose listids answers come from a function of the request body, not from HTTP."""

    def __init__(self, answer) -> None:
        super().__init__("unused")
        self.answer = answer
        self.bodies: list[dict] = []

    def _call(self, api, method, body, **kwargs):
        self.bodies.append(body)
        return self.answer(body)


def test_repeated_cursor_ends_the_slice() -> None:
    def answer(body: dict) -> dict:
        cursor = body["cursor"]
        page = [f"id-{cursor}-{n}" for n in range(20)]
        return {"errcode": 0, "result": {"list": page, "next_cursor": 20 if cursor == 0 else 0}}

    hook = ScriptedListing(answer)
    ids = list(hook._list_ids("PROC-X", 0, 1000))
    assert len(ids) == 40
    assert [b["cursor"] for b in hook.bodies] == [0, 20]


def capped_listing(instances: int):
    """A listids answer over ``instances`` instances, one per millisecond from 0, each query capped at
    LIST_ID_CAP as DingTalk caps it."""
    def answer(body: dict) -> dict:
        selected = [f"i{t}" for t in range(body["start_time"], min(body["end_time"], instances))]
        selected = selected[:dingtalk_listing.LIST_ID_CAP]
        page = selected[body["cursor"]:body["cursor"] + body["size"]]
        result = {"list": page}
        if body["cursor"] + body["size"] < len(selected):
            result["next_cursor"] = body["cursor"] + body["size"]
        return {"errcode": 0, "result": result}

    return answer


def test_capped_slice_is_halved_until_no_id_is_lost() -> None:
    # 25,000 instances, one per millisecond 0..24,999; every query is capped at LIST_ID_CAP.
    hook = ScriptedListing(capped_listing(25_000))
    ids = list(hook._list_ids("PROC-X", 0, 25_000))
    assert len(ids) == len(set(ids)) == 25_000
    assert all(b["size"] == 20 for b in hook.bodies)


def test_listing_an_empty_window_makes_no_call() -> None:
    hook = ScriptedListing(lambda body: pytest.fail("no call expected"))
    assert list(hook._list_ids("PROC-X", 500, 500)) == []


def test_epoch_ms_accepts_airflow_pendulum_datetimes():
    import pendulum

    from dingtalk_kingdee.hooks.dingtalk import to_epoch_ms

    moment = pendulum.datetime(2024, 3, 6, 9, 1, 2, tz="Asia/Shanghai")
    plain = datetime(2024, 3, 6, 1, 1, 2, tzinfo=UTC)
    assert to_epoch_ms(moment) == to_epoch_ms(plain) == 1709686862000


def test_a_capped_slice_is_not_listed_again_where_it_already_has_every_id() -> None:
    # 15,000 instances, one per millisecond 0..14,999, in one slice: the first query gives 0..9,999 (the
    # cap). The later half (7,500..15,000) starts with an id already had, so the earlier half holds
    # nothing new and is not listed again: 500 + 375 pages, not 500 + 375 + 375.
    hook = ScriptedListing(capped_listing(15_000))
    ids = list(hook._list_ids("PROC-X", 0, 15_000))
    assert len(ids) == len(set(ids)) == 15_000
    assert len(hook.bodies) == 500 + 375
