"""Approvals in DingTalk become Kingdee bills through Stream events and Airflow's event-driven
scheduling, on real Airflow processes (tests/events/conftest.py), driven only through the DingTalk
emulator's admin API and Airflow's REST API.

The claims are started a day before the topology: its first hourly run's listing has already passed
them, so no hourly run can bring them (only an event or the nightly sweep): every bill below comes
from a run the events triggered.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest

from scripts.approvals import APPROVE, REFUSE, WITHDRAW, running_claims
from tests.fixtures.event_runs import assert_event_runs_made_every_bill, decide_and_wait

_seeds = itertools.count(1000)


def claims(topology, count: int) -> list:
    return running_claims(count, topology.scheme.source.process_code, seed=next(_seeds))


def test_each_approval_becomes_one_bill_through_an_asset_triggered_run(events_topology):
    approved = claims(events_topology, 3)
    outcome = decide_and_wait(events_topology, [(c, APPROVE) for c in approved], pace_s=1)
    assert_event_runs_made_every_bill(outcome, {c.business_id for c in approved})


def test_thirty_approvals_within_ten_seconds_give_thirty_bills_in_a_few_runs(events_topology):
    approved = claims(events_topology, 30)
    started = time.monotonic()
    outcome = decide_and_wait(events_topology, [(c, APPROVE) for c in approved], pace_s=0.25)
    assert time.monotonic() - started > 7  # the approvals themselves were spread over about 8 s
    assert_event_runs_made_every_bill(outcome, {c.business_id for c in approved})
    event_runs = [r for r in outcome.runs if r["run_type"] == "asset_triggered"]
    assert 1 <= len(event_runs) <= 10, outcome
    assert max(len(outcome.planned[r["dag_run_id"]]) for r in event_runs) > 1, f"no run batched events: {outcome}"


def test_a_refused_or_withdrawn_claim_gives_no_bill(events_topology):
    refused, withdrawn, approved = claims(events_topology, 3)
    outcome = decide_and_wait(events_topology,
                              [(refused, REFUSE), (withdrawn, WITHDRAW), (approved, APPROVE)], pace_s=1)
    assert {refused.instance_id, withdrawn.instance_id} <= outcome.handled  # runs took their events
    assert_event_runs_made_every_bill(outcome, {approved.business_id})


def approve_around(topology, count: int, actions: dict[int, Callable[[], object]]) -> None:
    """Approve ``count`` new claims a second apart, doing ``actions[i]`` right after the i-th approval;
    each claim must become one bill made by an event run."""
    approved = claims(topology, count)
    decisions = [(c, APPROVE) for c in approved]
    outcome = decide_and_wait(topology, decisions, pace_s=1, between=lambda i: actions.get(i, lambda: None)())
    assert_event_runs_made_every_bill(outcome, {c.business_id for c in approved})


def test_the_triggerer_killed_and_restarted_loses_nothing(events_topology, dingtalk):
    """SIGKILL while events are in flight (delivered, maybe not yet stored or acked) and more
    approvals while it is down: redelivery on the new connection brings every one."""
    before = dingtalk.stream()
    approve_around(events_topology, 8, {2: lambda: events_topology.kill("triggerer"),
                                        5: lambda: events_topology.respawn("triggerer")})
    assert events_topology.processes["triggerer"].poll() is None
    assert dingtalk.stream()["connections_opened"] > before["connections_opened"]  # the new triggerer's


def test_the_socket_dropped_by_dingtalk_loses_nothing(events_topology, dingtalk):
    before = dingtalk.stream()
    approve_around(events_topology, 6, {2: lambda: dingtalk.arm_stream_fault("drop_socket")})
    assert dingtalk.stream()["dropped_sockets"] == before["dropped_sockets"] + 1


def test_duplicated_deliveries_pay_once(events_topology, dingtalk):
    approved = claims(events_topology, 5)
    dingtalk.arm_stream_fault("duplicate", times=None)
    try:
        before = dingtalk.stream()
        outcome = decide_and_wait(events_topology, [(c, APPROVE) for c in approved], pace_s=1)
        after = dingtalk.stream()
    finally:
        dingtalk.clear_stream_faults()
    assert after["duplicated"] - before["duplicated"] >= len(approved)  # each approval's event went out twice
    assert_event_runs_made_every_bill(outcome, {c.business_id for c in approved})


@pytest.fixture(autouse=True)
def no_fault_left_armed(dingtalk):
    yield
    dingtalk.clear_stream_faults()
