"""End to end: the pipeline against both emulators over real HTTP, staging on a real database.

Each test is a scenario an operator can cause: plain runs, re-runs, late approvals, backfills
overlapping scheduled runs, lost answers, crashed tasks, dry runs and replays.
"""

from __future__ import annotations

import shutil
import threading
from datetime import timedelta
from decimal import Decimal

import pytest

from dingtalk_kingdee import pipeline
from dingtalk_kingdee.reasons import MAPPING_REASONS
from dingtalk_kingdee.scheme import load_scheme
from dingtalk_kingdee.staging import BillState
from tests.e2e.conftest import SCHEME_FILE
from tests.e2e.expected import bill_total, compare_bill

pytestmark = pytest.mark.e2e


def payable_now(world) -> dict[str, dict]:
    return {c.instance["business_id"]: c for c in world.seed if c.truth.payable and c.truth.late_approval_at is None}


def test_a_run_turns_the_seeded_claims_into_exactly_the_expected_bills(world):
    summary = world.run()

    stored = world.bills_by_business_id()
    expected = payable_now(world)
    assert set(stored) == set(expected)
    world.assert_no_duplicates()
    for business_id, claim in expected.items():
        [bill] = stored[business_id]
        assert compare_bill(bill, claim.instance) == [], business_id
        assert bill_total(bill) == claim.truth.expected_total, business_id
    # Every claim that must not be paid is rejected with the reason the seed planned, and nothing else is.
    rejected = {r.business_id: r.reason_code for r in world.staged.summary().rejected_claims}
    for claim in world.seed:
        if claim.truth.expected_reject and claim.truth.late_approval_at is None:
            assert rejected.get(claim.instance["business_id"]) == claim.truth.expected_reject, claim.truth
    assert set(rejected) & set(expected) == set()
    loaded_money = Decimal(summary["money_by_state"]["loaded"])
    assert loaded_money == sum((c.truth.expected_total for c in expected.values()), Decimal("0"))
    assert summary["bills_by_state"] == {"loaded": len(expected)}


def test_no_refused_terminated_cancelled_or_running_claim_is_paid(world):
    world.run()
    stored = set(world.bills_by_business_id())
    for claim in world.seed:
        status, result = claim.instance["status"], claim.instance.get("result")
        if not (status == "COMPLETED" and result == "agree"):
            # A duplicate business_id may belong to a paid original: check by instance instead.
            bills = world.staged.bills()
            assert claim.instance["process_instance_id"] not in bills, (status, result)
    assert stored


def test_running_again_creates_nothing(world):
    world.run()
    before = len(world.bills())
    saves = world.kingdee.calls["BatchSave"]
    details = world.dingtalk.calls["get"]
    world.run()
    assert len(world.bills()) == before
    assert world.kingdee.calls["BatchSave"] == saves
    world.assert_no_duplicates()
    # Final claims are never fetched again; only the still-running ones are re-read.
    running = sum(1 for c in world.seed if c.instance["status"] in ("RUNNING", "NEW"))
    fetched_again = world.dingtalk.calls["get"] - details
    assert fetched_again == running


def test_a_claim_approved_after_its_first_sighting_is_loaded_by_a_later_run(world):
    world.run()
    late = world.approve_late()
    assert late, "the seed should plan late approvals"
    world.run()
    stored = world.bills_by_business_id()
    for claim in late:
        [bill] = stored[claim.instance["business_id"]]
        assert bill_total(bill) == claim.truth.expected_total
    world.assert_no_duplicates()


def test_backfill_of_three_intervals_with_an_overlapping_scheduled_run_creates_no_duplicate(world):
    hour = timedelta(hours=1)
    lookback = timedelta(days=world.scheme.source.lookback_days)
    ends = [world.now - 2 * hour, world.now - hour, world.now]
    runs = [world.make_run(run_id=f"backfill__{i}", window_start=end - lookback, window_end=end)
            for i, end in enumerate(ends)]
    runs.append(world.make_run(run_id="scheduled__now"))
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(runs))

    def go(run: pipeline.Run) -> None:
        try:
            dingtalk, kingdee = world.hooks()
            barrier.wait()
            pipeline.run_all(world.scheme, dingtalk, kingdee, world.engine, run)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(run,)) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    world.assert_no_duplicates()
    assert set(world.bills_by_business_id()) == set(payable_now(world))


def test_commit_then_drop_followed_by_a_retry_creates_no_duplicate(world):
    dingtalk, kingdee = world.hooks()
    run = world.make_run()
    pipeline.extract(world.scheme, dingtalk, world.engine, run)
    pipeline.transform(world.scheme, world.engine, run)
    world.kingdee.inject("commit_then_drop", service="BatchSave", times=1)
    with pytest.raises(pipeline.LoadIncomplete):
        pipeline.load(world.scheme, kingdee, world.engine, run)
    in_doubt = list(world.staged.bills(BillState.UNKNOWN).values())
    assert in_doubt, "the dropped batch should be marked unknown"
    saved_blind = len(world.bills())
    assert saved_blind == len(in_doubt)  # Kingdee committed the batch the client never heard back from
    saves = world.kingdee.calls["BatchSave"]

    # The task retry: reconcile first, then send only what is still pending.
    counts = pipeline.load(world.scheme, kingdee, world.engine, run)
    assert counts["reconciled_found"] == len(in_doubt)
    world.assert_no_duplicates()
    assert set(world.bills_by_business_id()) == set(payable_now(world))
    sent_again = world.kingdee.calls["BatchSave"] - saves
    assert sent_again == -(-(len(payable_now(world)) - len(in_doubt)) // world.scheme.target.batch_size)


def test_clearing_load_alone_reruns_safely(world):
    world.run()
    _, kingdee = world.hooks()
    saves = world.kingdee.calls["BatchSave"]
    counts = pipeline.load(world.scheme, kingdee, world.engine, world.make_run())
    assert (counts["sent"], counts["loaded"]) == (0, 0)
    assert world.kingdee.calls["BatchSave"] == saves
    world.assert_no_duplicates()


def test_a_load_killed_between_marking_and_sending_recovers_after_the_lease(world):
    dingtalk, kingdee = world.hooks()
    run = world.make_run()
    pipeline.extract(world.scheme, dingtalk, world.engine, run)
    pipeline.transform(world.scheme, world.engine, run)
    # A load marks a batch "sending" and dies before BatchSave.
    orphaned = world.staged.claim_for_sending(5)
    assert len(orphaned) == 5
    # Within the lease a new load leaves them alone (their sender could still be running) ...
    pipeline.load(world.scheme, kingdee, world.engine, run)
    states = world.staged.bills()
    assert {states[c.instance_id].state for c in orphaned} == {BillState.SENDING}
    # ... after it, they are looked up in Kingdee, found missing, and sent exactly once.
    counts = pipeline.reconcile(world.scheme, kingdee, world.engine, run, lease=timedelta(0))
    assert counts == {"reconciled_found": 0, "reconciled_missing": 5, "reconciled_waiting": 0}
    pipeline.load(world.scheme, kingdee, world.engine, run)
    world.assert_no_duplicates()
    assert set(world.bills_by_business_id()) == set(payable_now(world))


def test_dry_run_writes_nothing_to_kingdee(world):
    summary = world.run(dry_run=True)
    assert world.bills() == []
    assert world.kingdee.calls["BatchSave"] == 0
    assert world.dingtalk.comments == []
    assert summary["bills_by_state"] == {"pending": len(payable_now(world))}
    # A real run afterwards sends exactly the bills the dry run announced.
    world.run()
    assert set(world.bills_by_business_id()) == set(payable_now(world))


def test_adding_the_missing_people_to_the_csv_value_maps_pays_their_claims_on_the_next_ordinary_run(
        world_factory, tmp_path):
    world = world_factory(count=80, seed=11, edge_rate=0.3)
    schemes = tmp_path / "schemes"
    shutil.copytree(SCHEME_FILE.parent, schemes)
    world.run(scheme=load_scheme(schemes / SCHEME_FILE.name))
    unmapped = [c for c in world.seed if c.truth.expected_reject == "unmapped_employee"]
    assert unmapped, "the seed should hold a claim from an unmapped employee"
    assert not {c.instance["business_id"] for c in unmapped} & set(world.bills_by_business_id())

    # The implementer adds the missing people to both CSV files that key on the DingTalk user.
    userids = sorted({c.instance["originator_userid"] for c in unmapped})
    for name, value in (("employees.csv", "EMP1001"), ("employee_names.csv", "新同事")):
        with (schemes / "expense_to_paybill" / name).open("a", encoding="utf-8") as csv:
            csv.writelines(f"{userid},{value}\n" for userid in userids)
    fixed = load_scheme(schemes / SCHEME_FILE.name)

    summary = world.run(scheme=fixed)  # an ordinary run: no replay_rejected, no instance_ids
    stored = world.bills_by_business_id()
    for claim in unmapped:
        assert claim.instance["business_id"] in stored
    # Only the claims rejected for a value map were transformed again, not the refused or malformed ones.
    mapping_rejected = [c for c in world.seed if c.truth.expected_reject in MAPPING_REASONS]
    assert summary["steps"]["transform"]["claims"] == len(mapping_rejected)
    assert "unmapped_employee" not in world.staged.summary().rejected_by_reason
    # Still unmapped (the expense items): rejected again under the new fingerprint, not retried every run.
    assert world.run(scheme=fixed)["steps"]["transform"]["claims"] == 0
    world.assert_no_duplicates()


def test_replay_rejected_transforms_every_rejected_claim_again(world_factory):
    world = world_factory(count=80, seed=11, edge_rate=0.3)
    world.run()
    assert world.run()["steps"]["transform"]["claims"] == 0
    rejected = {r.instance_id for r in world.staged.summary().rejected_claims}
    replayed = world.run(replay_rejected=True)
    assert replayed["steps"]["transform"]["claims"] == len(rejected)


def test_instance_ids_syncs_exactly_those_claims(world):
    chosen = sorted(payable_now(world))[:3]
    ids = tuple(c.instance["process_instance_id"] for c in world.seed if c.instance["business_id"] in chosen)
    world.run(instance_ids=ids)
    assert sorted(world.bills_by_business_id()) == chosen


def test_kingdee_refusal_is_recorded_with_its_reason_and_not_retried_blindly(world):
    # An account set without one of the mapped employees: Kingdee refuses those bills.
    employees = dict.fromkeys(world.scheme.maps["employees"], "EMP9999")
    broken = world.scheme.model_copy(update={"maps": {**world.scheme.maps, "employees": employees}})
    world.run(scheme=broken)
    failed = list(world.staged.bills(BillState.FAILED).values())
    assert failed and all("EMP9999" in (b.last_error or "") or b.last_error for b in failed)
    saves = world.kingdee.calls["BatchSave"]
    world.run(scheme=broken)
    assert world.kingdee.calls["BatchSave"] == saves  # refused bills wait for a fix and a replay


def test_write_back_comments_once_per_bill(world):
    world.run()
    loaded = world.staged.bills()
    comments = world.dingtalk.comments
    assert len(comments) == len(payable_now(world))
    by_instance = {c["process_instance_id"]: c for c in comments}
    for instance_id, bill in loaded.items():
        assert bill.bill_number in by_instance[instance_id]["text"]
    world.run()
    assert len(world.dingtalk.comments) == len(comments)


def test_a_bill_number_taken_by_another_bill_fails_that_claim_without_looping(world):
    world.run(dry_run=True)  # pending bills in staging, nothing in Kingdee
    victim = next(iter(world.staged.bills(BillState.PENDING).values()))  # the first by claim id
    # Someone keyed a bill by hand with the number this claim would get.
    foreign = {**victim.model, "FTHIRDBILLNO": "ENTERED-BY-HAND"}
    _, kingdee = world.hooks()
    [outcome] = kingdee.batch_save("AP_PAYBILL", [foreign], world.scheme.batch_save_options())
    assert outcome.success

    world.run()
    bills = world.staged.bills()
    assert bills[victim.instance_id].state == BillState.FAILED
    assert "FBillNo" in bills[victim.instance_id].last_error
    others = {b.business_id for b in bills.values() if b.state == BillState.LOADED}
    assert others == set(payable_now(world)) - {victim.business_id}
    assert world.bills_by_business_id()["ENTERED-BY-HAND"]  # the other bill is left as it was
    saves = world.kingdee.calls["BatchSave"]
    world.run()
    assert world.kingdee.calls["BatchSave"] == saves


def test_a_claim_approved_after_it_left_the_look_back_window_is_still_loaded(world):
    world.run()
    late = world.approve_late()
    # The next run's window no longer covers when these claims were started.
    world.run(window_start=world.now - timedelta(hours=1), window_end=world.now)
    stored = world.bills_by_business_id()
    for claim in late:
        assert claim.instance["business_id"] in stored
    world.assert_no_duplicates()
