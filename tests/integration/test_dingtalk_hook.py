"""DingTalkHook against the DingTalk emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import requests
from dk_emulators.dingtalk import DEFAULT_PROCESS_CODE, DingTalkEmulator

from dingtalk_kingdee.errors import DingTalkError, DingTalkQuotaExhausted, DingTalkUnavailable
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook, RetryPolicy, reset_shared_state

CHINA = timezone(timedelta(hours=8))
# Real waits for throttling (1 s penalty) and ban JSON (its own "wait"); short backoff otherwise.
FAST = RetryPolicy(backoff_base=0.02, backoff_cap=0.1, ban_wait=0.3)


def make_instances(count: int, start: datetime, end: datetime, prefix: str = "inst",
                   process_code: str = DEFAULT_PROCESS_CODE) -> list[dict]:
    """``count`` minimal approved instances whose start times are spread evenly over [start, end)."""
    step = (end - start) / count
    instances = []
    for number in range(count):
        created = (start + step * number).astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")
        instances.append({
            "process_instance_id": f"{prefix}-{number:06d}",
            "process_code": process_code,
            "title": f"报销单 {number}",
            "create_time": created,
            "finish_time": created,
            "status": "COMPLETED",
            "result": "agree",
            "business_id": f"2024{number:017d}",
            "form_component_values": [{"name": "报销金额", "value": "150", "component_type": "MoneyField"}],
        })
    return instances


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, emulator: DingTalkEmulator,
                   qps: float = 20, secret: str | None = None) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "dingtalk", "host": emulator.base_url, "login": emulator.app_key,
        "password": secret if secret is not None else emulator.app_secret, "extra": {"qps": qps},
    }))
    return conn_id


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., DingTalkEmulator]]:
    started: list[DingTalkEmulator] = []

    def start(**options) -> DingTalkEmulator:
        emulator = DingTalkEmulator(**options)
        emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> None:
    # Tokens are cached per base URL; a later emulator may get an earlier one's port.
    reset_shared_state()


def now() -> datetime:
    return datetime.now(UTC)


# ---- listing -------------------------------------------------------------------------------


def test_pages_over_hundreds_of_ids(dingtalk_emulator, dingtalk_conn_id) -> None:
    instances = make_instances(450, now() - timedelta(days=10), now() - timedelta(hours=1))
    dingtalk_emulator.add_instances(instances)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    ids = list(hook.list_instance_ids(DEFAULT_PROCESS_CODE, now() - timedelta(days=11), now()))

    assert len(ids) == len(set(ids)) == 450
    assert set(ids) == {i["process_instance_id"] for i in instances}
    assert dingtalk_emulator.calls["listids"] == 23  # 22 full pages of 20 and one of 10


def test_only_instances_started_inside_the_window_and_a_minute_behind_now(
        dingtalk_emulator, dingtalk_conn_id) -> None:
    inside = make_instances(30, now() - timedelta(days=3), now() - timedelta(days=2), prefix="in")
    before = make_instances(5, now() - timedelta(days=9), now() - timedelta(days=8), prefix="before")
    just_now = make_instances(1, now() - timedelta(seconds=5), now(), prefix="now")
    dingtalk_emulator.add_instances(inside + before + just_now)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    ids = set(hook.list_instance_ids(DEFAULT_PROCESS_CODE, now() - timedelta(days=4), now()))

    assert ids == {i["process_instance_id"] for i in inside}


def test_window_longer_than_120_days_is_sliced(dingtalk_emulator, dingtalk_conn_id) -> None:
    instances = make_instances(300, now() - timedelta(days=330), now() - timedelta(days=1))
    dingtalk_emulator.add_instances(instances)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    # The emulator refuses any single query over 120 days, so success means the hook sliced.
    ids = list(hook.list_instance_ids(DEFAULT_PROCESS_CODE, now() - timedelta(days=340), now()))

    assert len(ids) == len(set(ids)) == 300
    assert set(ids) == {i["process_instance_id"] for i in instances}


def test_slice_over_the_10000_id_cap_is_split(emulator_factory, monkeypatch) -> None:
    emulator = emulator_factory(qps=None)  # unthrottled: this test is about the cap, not the pace
    instances = make_instances(10_500, now() - timedelta(days=6), now() - timedelta(days=1))
    emulator.add_instances(instances)
    conn_id = set_connection(monkeypatch, "dingtalk_cap", emulator, qps=5000)
    hook = DingTalkHook(conn_id, retry_policy=FAST)

    ids = list(hook.list_instance_ids(DEFAULT_PROCESS_CODE, now() - timedelta(days=7), now()))

    assert len(ids) == len(set(ids)) == 10_500
    assert set(ids) == {i["process_instance_id"] for i in instances}
    # 500 pages hit the cap; the later half (about 5,250 ids) is listed and, as it starts with an id
    # the capped listing already gave, the earlier half is not listed again (it used to be: 1,001+ pages).
    assert 500 + 5_250 // 20 - 2 <= emulator.calls["listids"] <= 500 + 5_250 // 20 + 2


def test_listing_survives_a_malformed_page(dingtalk_emulator, dingtalk_conn_id) -> None:
    instances = make_instances(100, now() - timedelta(days=2), now() - timedelta(hours=2))
    dingtalk_emulator.add_instances(instances)
    dingtalk_emulator.inject("malformed_json", api="listids", times=1)
    dingtalk_emulator.inject("http_502", api="listids", times=1)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    ids = set(hook.list_instance_ids(DEFAULT_PROCESS_CODE, now() - timedelta(days=3), now()))

    assert ids == {i["process_instance_id"] for i in instances}


def test_unknown_process_code_raises_dingtalk_error(dingtalk_emulator, dingtalk_conn_id) -> None:
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)
    with pytest.raises(DingTalkError) as caught:
        list(hook.list_instance_ids("PROC-NO-SUCH", now() - timedelta(days=1), now()))
    assert caught.value.errcode not in (0, 88)
    assert caught.value.api == "processinstance/listids"
    assert dingtalk_emulator.calls["listids"] == 1  # permanent: not retried


# ---- detail --------------------------------------------------------------------------------


def test_get_instance_returns_the_process_instance(dingtalk_emulator, dingtalk_conn_id) -> None:
    instance = make_instances(1, now() - timedelta(days=1), now())[0]
    dingtalk_emulator.add_instances([instance])
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    detail = hook.get_instance(instance["process_instance_id"])

    assert detail["business_id"] == instance["business_id"]
    assert detail["form_component_values"] == instance["form_component_values"]
    assert detail["status"] == "COMPLETED" and detail["result"] == "agree"


def test_get_instances_fetches_each_id_once(dingtalk_emulator, dingtalk_conn_id) -> None:
    instances = make_instances(60, now() - timedelta(days=1), now())
    dingtalk_emulator.add_instances(instances)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)
    wanted = [i["process_instance_id"] for i in instances]

    got = dict(hook.get_instances(iter(wanted + wanted[:10])))

    assert set(got) == set(wanted)
    assert all(got[i["process_instance_id"]]["title"] == i["title"] for i in instances)
    assert dingtalk_emulator.calls["get"] < 60 + 5  # no repeats; at most a rare throttled retry


def test_four_concurrent_callers_share_the_app_budget(dingtalk_emulator, dingtalk_conn_id) -> None:
    instances = make_instances(100, now() - timedelta(days=1), now())
    dingtalk_emulator.add_instances(instances)
    ids = [i["process_instance_id"] for i in instances]
    results: dict[int, dict] = {}
    failures: list[BaseException] = []

    def caller(number: int) -> None:
        try:
            hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)
            results[number] = dict(hook.get_instances(ids[number::4]))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert {key for result in results.values() for key in result} == set(ids)
    # One shared pace for the app: 4 unshared callers would draw dozens of 90018 answers.
    assert dingtalk_emulator.calls["get"] < 100 + 10


def test_token_expiring_mid_run_is_refreshed(emulator_factory, monkeypatch) -> None:
    emulator = emulator_factory(token_ttl=1)
    instances = make_instances(50, now() - timedelta(days=1), now())
    emulator.add_instances(instances)
    hook = DingTalkHook(set_connection(monkeypatch, "dingtalk_ttl", emulator), retry_policy=FAST)

    got = dict(hook.get_instances(i["process_instance_id"] for i in instances))

    assert len(got) == 50
    assert emulator.calls["gettoken"] >= 2  # 50 calls at 20/s outlive a 1 s token


def test_token_cache_is_shared_across_hook_instances(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(3, now() - timedelta(days=1), now()))
    for number in range(3):
        DingTalkHook(dingtalk_conn_id, retry_policy=FAST).get_instance(f"inst-{number:06d}")
    assert dingtalk_emulator.calls["gettoken"] == 1


def test_expired_token_is_dropped_and_fetched_again(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)
    hook.get_instance("inst-000000")
    dingtalk_emulator.expire_tokens()  # the service forgets the token before the client expects

    assert hook.get_instance("inst-000000")["title"] == "报销单 0"
    assert dingtalk_emulator.calls["gettoken"] == 2


# ---- faults --------------------------------------------------------------------------------

RECOVERABLE_FAULTS = [
    ("invalid_token_plain", 1), ("invalid_token_wrapped", 1), ("expired_token_wrapped", 1),
    ("token_40001_plain", 1), ("token_33001_wrapped", 1),
    ("qps_plain", 1), ("qps_wrapped", 2), ("global_qps_wrapped", 1),
    ("busy", 3),
    ("http_500", 2), ("http_502", 1), ("malformed_json", 2), ("drop", 2),
    ("ip_ban_html", 1), ("ip_ban_json", 1),
]


@pytest.mark.parametrize(("fault", "times"), RECOVERABLE_FAULTS)
def test_recoverable_fault_is_survived(dingtalk_emulator, dingtalk_conn_id, fault: str, times: int) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)
    dingtalk_emulator.inject(fault, api="get", times=times)

    assert hook.get_instance("inst-000000")["business_id"] == "2024" + "0" * 17
    assert dingtalk_emulator.calls["get"] == times + 1
    assert dingtalk_emulator.faults == []


def test_hanging_answer_times_out_and_is_retried(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    dingtalk_emulator.hang_seconds = 3
    hook = DingTalkHook(dingtalk_conn_id, read_timeout=0.5, retry_policy=FAST)
    dingtalk_emulator.inject("hang", api="get", times=1)

    assert hook.get_instance("inst-000000")["status"] == "COMPLETED"
    assert dingtalk_emulator.calls["get"] == 2


def test_gettoken_faults_are_retried(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    dingtalk_emulator.inject("http_502", api="gettoken", times=1)
    dingtalk_emulator.inject("busy", api="gettoken", times=1)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    assert hook.get_instance("inst-000000")["result"] == "agree"
    assert dingtalk_emulator.calls["gettoken"] == 3


def test_token_refused_twice_raises(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    dingtalk_emulator.inject("invalid_token_wrapped", api="get", times=2)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    with pytest.raises(DingTalkError) as caught:
        hook.get_instance("inst-000000")
    assert (caught.value.errcode, caught.value.sub_code) == (88, "40014")
    assert dingtalk_emulator.calls["get"] == 2


def test_busy_more_than_three_times_is_unavailable(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    dingtalk_emulator.inject("busy", api="get", times=4)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    with pytest.raises(DingTalkUnavailable):
        hook.get_instance("inst-000000")
    assert dingtalk_emulator.calls["get"] == 4


def test_persistent_gateway_errors_exhaust_the_retries(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    dingtalk_emulator.inject("http_500", api="get", times=None)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    with pytest.raises(DingTalkUnavailable, match="processinstance/get"):
        hook.get_instance("inst-000000")
    assert dingtalk_emulator.calls["get"] == FAST.transient_attempts


@pytest.mark.parametrize("fault", ["quota_plain", "quota_wrapped"])
def test_monthly_quota_is_permanent(dingtalk_emulator, dingtalk_conn_id, fault: str) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    dingtalk_emulator.inject(fault, api="get", times=1)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    with pytest.raises(DingTalkError, match="90020") as caught:
        hook.get_instance("inst-000000")
    assert 90020 in (caught.value.errcode, int(caught.value.sub_code or 0))
    assert dingtalk_emulator.calls["get"] == 1


def test_bad_credentials_raise_40096(dingtalk_emulator, monkeypatch) -> None:
    conn_id = set_connection(monkeypatch, "dingtalk_bad", dingtalk_emulator, secret="wrong-secret")
    with pytest.raises(DingTalkError) as caught:
        DingTalkHook(conn_id, retry_policy=FAST).get_instance("inst-000000")
    assert caught.value.errcode == 40096
    assert caught.value.api == "gettoken"


def test_unknown_instance_raises_dingtalk_error(dingtalk_emulator, dingtalk_conn_id) -> None:
    with pytest.raises(DingTalkError) as caught:
        DingTalkHook(dingtalk_conn_id, retry_policy=FAST).get_instance("no-such-instance")
    assert caught.value.errcode != 0
    assert "processinstance/get" in str(caught.value)


def test_unreachable_service_is_unavailable(monkeypatch) -> None:
    emulator = DingTalkEmulator()
    emulator.start()
    emulator.stop()  # nothing listens on that port any more
    conn_id = set_connection(monkeypatch, "dingtalk_gone", emulator)
    with pytest.raises(DingTalkUnavailable, match="connection error"):
        DingTalkHook(conn_id, retry_policy=FAST).get_instance("inst-000000")


# ---- comments ------------------------------------------------------------------------------


def test_add_comment(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    hook.add_comment("inst-000000", "user123", "已生成付款单 FKD000123")

    assert [(c["process_instance_id"], c["comment_userid"], c["text"]) for c in dingtalk_emulator.comments] == [
        ("inst-000000", "user123", "已生成付款单 FKD000123")]


def test_comment_is_not_resent_after_an_ambiguous_failure(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    dingtalk_emulator.inject("drop", api="comment_add", times=1)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    with pytest.raises(DingTalkUnavailable, match="may or may not"):
        hook.add_comment("inst-000000", "user123", "已生成付款单 FKD000124")
    assert dingtalk_emulator.calls["comment_add"] == 1


def test_comment_is_resent_after_a_throttle_refusal(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(1, now() - timedelta(days=1), now()))
    dingtalk_emulator.inject("qps_wrapped", api="comment_add", times=1)
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    hook.add_comment("inst-000000", "user123", "已生成付款单 FKD000125")

    assert len(dingtalk_emulator.comments) == 1


# ---- secrets -------------------------------------------------------------------------------


def test_logs_of_a_full_run_hold_neither_token_nor_secret(
        dingtalk_emulator, dingtalk_conn_id, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    instances = make_instances(45, now() - timedelta(days=2), now() - timedelta(hours=1))
    dingtalk_emulator.add_instances(instances)
    dingtalk_emulator.hang_seconds = 2
    base = dingtalk_emulator.base_url
    credentials = {"appkey": dingtalk_emulator.app_key, "appsecret": dingtalk_emulator.app_secret}
    hook = DingTalkHook(dingtalk_conn_id, read_timeout=0.5, retry_policy=FAST)

    ids = list(hook.list_instance_ids(DEFAULT_PROCESS_CODE, now() - timedelta(days=3), now()))
    first_token = requests.get(f"{base}/gettoken", params=credentials, timeout=5).json()["access_token"]
    dingtalk_emulator.inject("drop", api="get", times=1)
    dingtalk_emulator.inject("hang", api="get", times=1)
    dingtalk_emulator.inject("http_502", api="get", times=1)
    fetched = dict(hook.get_instances(ids[:20]))
    dingtalk_emulator.expire_tokens()
    fetched.update(hook.get_instances(ids[20:]))
    hook.add_comment(ids[0], "user123", "已生成付款单 FKD000126")
    dingtalk_emulator.inject("drop", api="comment_add", times=1)
    with pytest.raises(DingTalkUnavailable) as caught:
        hook.add_comment(ids[1], "user123", "已生成付款单 FKD000127")
    second_token = requests.get(f"{base}/gettoken", params=credentials, timeout=5).json()["access_token"]

    assert len(fetched) == 45
    assert first_token != second_token
    captured = capsys.readouterr()
    text = "\n".join([caplog.text, captured.out, captured.err, str(caught.value)])
    assert "access_token=***" in text  # urllib3 logged the request lines, masked
    for secret in (first_token, second_token, dingtalk_emulator.app_secret):
        assert secret not in text


def test_connection_test_button(dingtalk_emulator, dingtalk_conn_id, monkeypatch) -> None:
    assert DingTalkHook(dingtalk_conn_id).test_connection() == (
        True, "DingTalk issued an access token for this app")
    bad_id = set_connection(monkeypatch, "dingtalk_bad_test", dingtalk_emulator, secret="wrong-secret-1")
    ok, message = DingTalkHook(bad_id).test_connection()
    assert not ok
    assert "40096" in message and "wrong-secret-1" not in message


# ---- the call meter and the monthly quota ---------------------------------------------------
def test_every_call_is_counted_per_api(dingtalk_emulator, dingtalk_conn_id) -> None:
    dingtalk_emulator.add_instances(make_instances(45, now() - timedelta(days=2), now() - timedelta(hours=1)))
    dingtalk_emulator.inject("busy", api="get", times=1)  # a retried call is a second HTTP call
    hook = DingTalkHook(dingtalk_conn_id, retry_policy=FAST)

    ids = list(hook.list_instance_ids("PROC-EXPENSE-DEMO", now() - timedelta(days=3), now()))
    fetched = dict(hook.get_instances(ids[:5]))
    hook.add_comment(ids[0], "manager4500", "已生成付款单")

    assert len(ids) == 45 and len(fetched) == 5
    assert hook.call_counts() == {"gettoken": 1, "processinstance/listids": 3, "processinstance/get": 6,
                                  "process/instance/comment/add": 1}
    assert hook.meter.metered() == 10  # gettoken is not metered
    assert dingtalk_emulator.usage()["used"] == 9  # the emulator does not meter the faulted answer


@pytest.mark.parametrize("wrap", ["plain", "wrapped"])
def test_quota_raises_at_once_and_stops_the_hooks_calls(emulator_factory, monkeypatch, wrap) -> None:
    emulator = emulator_factory(monthly_quota=2, wrap_errors=wrap)
    emulator.add_instances(make_instances(3, now() - timedelta(days=1), now() - timedelta(hours=1)))
    hook = DingTalkHook(set_connection(monkeypatch, "dingtalk_quota", emulator), retry_policy=FAST)
    hook.get_instance("inst-000000")
    hook.get_instance("inst-000001")

    with pytest.raises(DingTalkQuotaExhausted, match="90020") as caught:
        hook.get_instance("inst-000002")
    assert isinstance(caught.value, DingTalkError)  # still a permanent DingTalk error
    assert emulator.calls["get"] == 3  # no retry
    # The hook makes no further call in this run: the quota stays spent until next month.
    with pytest.raises(DingTalkQuotaExhausted):
        list(hook.get_instances(["inst-000000", "inst-000001"]))
    with pytest.raises(DingTalkQuotaExhausted):
        hook.add_comment("inst-000000", "manager4500", "x")
    assert emulator.calls["get"] == 3 and emulator.calls["comment_add"] == 0
    assert hook.call_counts() == {"gettoken": 1, "processinstance/get": 3}
