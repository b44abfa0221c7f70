"""The one fault mechanism both emulators use (dk_emulators.faults): arming, countdown, rate, disarm."""

from __future__ import annotations

import pytest
from dk_emulators.faults import FaultBoard

KINDS = {"busy": "errcode -1", "latency": "sleep first"}


def test_a_fault_fires_on_its_next_times_matching_calls_then_leaves_the_board():
    board = FaultBoard(KINDS)
    board.arm("busy", target="get", times=2)
    assert board.take("listids") == []
    assert [bool(board.take("get")) for _ in range(3)] == [True, True, False]
    assert board.armed == []


def test_times_none_fires_until_disarmed():
    board = FaultBoard(KINDS)
    board.arm("busy", times=None)
    assert all(board.take_first(call) for call in ("get", "listids", "get"))
    assert board.disarm() == 1 and board.take_first("get") is None


def test_take_gives_every_firing_fault_and_take_first_only_one():
    board = FaultBoard(KINDS, params={"latency_ms": 0})
    board.arm("latency", latency_ms=50)
    board.arm("busy")
    first = board.take_first("get")
    assert first is not None and first.kind == "latency" and first.params == {"latency_ms": 50}
    assert [f.kind for f in board.armed] == ["busy"]
    board.arm("latency", latency_ms=5)
    assert [f.kind for f in board.take("get")] == ["busy", "latency"]


def test_rate_draws_are_seeded_and_count_only_firings():
    def outcomes() -> list[bool]:
        board = FaultBoard(KINDS, seed=5)
        board.arm("busy", times=None, rate=0.5)
        return [board.take_first("get") is not None for _ in range(40)]

    first = outcomes()
    assert first == outcomes() and 5 < sum(first) < 35
    board = FaultBoard(KINDS, seed=1)
    fault = board.arm("busy", times=3, rate=0.5)
    fired = sum(board.take_first("get") is not None for _ in range(100))
    assert fired == 3 and fault.fired == 3 and board.armed == []


def test_targets_are_compared_normalized():
    board = FaultBoard(KINDS, normalize=lambda name: name.rsplit(".", 1)[-1])
    board.arm("busy", target="DynamicFormService.BatchSave")
    assert board.take_first("Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.BatchSave") is not None


@pytest.mark.parametrize(("kind", "options"), [
    ("meteor", {}),
    ("busy", {"target": "listid"}),
    ("busy", {"rate": 1.5}),
    ("busy", {"colour": "red"}),
])
def test_arming_refuses_what_it_does_not_know(kind, options):
    board = FaultBoard(KINDS, targets=("get", "listids"))
    with pytest.raises(ValueError):
        board.arm(kind, **options)
    assert board.armed == []
