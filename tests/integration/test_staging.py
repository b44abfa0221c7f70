"""Staging on a real database (PostgreSQL when DK_TEST_DATABASE_URL is set, as in CI)."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from dingtalk_kingdee import staging
from dingtalk_kingdee.money import to_cents
from dingtalk_kingdee.staging import BillState, SchemeStaging
from dingtalk_kingdee.staging.tables import schema_version

SCHEME = "s1"


def answer(instance_id: str, status: str = "COMPLETED", result: str = "agree", title: str = "t") -> dict:
    return {"process_instance_id": instance_id, "business_id": f"B{instance_id}", "status": status,
            "result": result, "title": title}


def bill(instance_id: str, amount: str = "10.50") -> staging.BillRecord:
    return staging.BillRecord(instance_id=instance_id, business_id=f"B{instance_id}", match_value=f"B{instance_id}",
                              amount=Decimal(amount), payee="张伟", model={"FBillNo": f"B{instance_id}"})


@pytest.fixture
def staged(engine) -> SchemeStaging:
    return SchemeStaging(engine, SCHEME)


def store_bills(staged, ids, amount="10.50"):
    staged.store_answers({i: answer(i) for i in ids}, "r1")
    staged.save_transform(dict.fromkeys(ids, 1), [bill(i, amount) for i in ids], [], [], "r1")


def test_schema_creation_is_idempotent_and_safe_in_parallel(staging_url):
    engines = [staging.create_engine(staging_url) for _ in range(4)]
    errors: list[Exception] = []

    def create(e):
        try:
            staging.ensure_schema(e)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    staging.ensure_schema(engines[0])
    with engines[0].connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema_version)).scalar() == 1
    for e in engines:
        e.dispose()


def test_payload_version_bumps_only_when_the_answer_changes(staged):
    assert staged.store_answers({"a": answer("a", "RUNNING", "")}, "r1") == 1
    assert staged.store_answers({"a": answer("a", "RUNNING", "")}, "r2") == 0
    assert staged.final_among(["a"]) == set()
    assert staged.unfinished_claims() == ["a"]
    assert staged.claims_to_transform(10) == []  # running claims are not transformed
    assert staged.store_answers({"a": answer("a")}, "r3") == 1
    assert staged.final_among(["a", "zzz"]) == {"a"}
    assert staged.unfinished_claims() == []
    [claim] = staged.claims_to_transform(10)
    assert (claim.instance_id, claim.payload["status"], claim.version) == ("a", "COMPLETED", 2)


def test_each_scheme_sees_only_its_own_claims(engine, staged):
    store_bills(staged, ["a"])
    other = SchemeStaging(engine, "s2")
    assert other.final_among(["a"]) == set()
    assert other.claim_for_sending(10) == []
    assert [c.instance_id for c in staged.claim_for_sending(10)] == ["a"]


def test_money_is_exact_in_cents(staged):
    store_bills(staged, ["a"], amount="12345678.91")
    [claimed] = staged.claim_for_sending(10)
    assert claimed.amount == Decimal("12345678.91")
    with pytest.raises(ValueError):
        to_cents(Decimal("1.005"))


def test_concurrent_claims_never_share_a_bill(staged, staging_url):
    ids = [f"c{i:03d}" for i in range(60)]
    store_bills(staged, ids)
    results: list[list[str]] = []
    lock = threading.Lock()

    def claimer():
        own = staging.create_engine(staging_url)
        got: list[str] = []
        while True:
            claimed = SchemeStaging(own, SCHEME).claim_for_sending(7)
            if not claimed:
                break
            got.extend(c.instance_id for c in claimed)
        with lock:
            results.append(got)
        own.dispose()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed_all = [i for got in results for i in got]
    assert sorted(claimed_all) == ids  # every bill claimed exactly once


def test_a_sent_bill_is_never_replaced_by_a_new_transform(staged):
    store_bills(staged, ["a", "b"])
    claimed = staged.claim_for_sending(1)
    assert [c.instance_id for c in claimed] == ["a"]
    saved = staged.save_transform({"a": 2, "b": 2}, [bill("a", "99.00"), bill("b", "20.00")], [], [], "r2")
    assert saved.kept_sent == 1
    bills = staged.bills()
    assert (bills["a"].state, bills["a"].amount) == (BillState.SENDING, Decimal("10.50"))
    assert (bills["b"].state, bills["b"].amount) == (BillState.PENDING, Decimal("20.00"))


def test_a_match_value_can_become_only_one_bill(staged):
    store_bills(staged, ["a"])
    other = staging.BillRecord("b", "Ba", "Ba", Decimal("1.00"), None, {})
    staged.store_answers({"b": answer("b")}, "r1")
    saved = staged.save_transform({"b": 1}, [other], [], [], "r1")
    assert (saved.bills, saved.rejects) == (0, 1)
    assert set(staged.bills()) == {"a"}
    assert staged.summary().rejected_by_reason == {"staging_refused": 1}


def test_bills_in_doubt_respects_the_sending_lease(staged):
    store_bills(staged, ["a", "b"])
    staged.claim_for_sending(2)
    assert staged.bills_in_doubt(timedelta(minutes=15)) == []
    assert [b.instance_id for b in staged.bills_in_doubt(timedelta(0))] == ["a", "b"]
    assert staged.mark_unknown(["a"], "r2", "no answer") == 1
    assert [b.instance_id for b in staged.bills_in_doubt(timedelta(minutes=15))] == ["a"]
    assert not staged.mark_loaded("a", "r2", kingdee_id="7", bill_number="FKD1", doc_status="A",
                                  from_states=(BillState.PENDING,))
    assert staged.bills()["a"].state == BillState.UNKNOWN


def test_bill_moves_record_their_outcome(staged):
    store_bills(staged, ["a", "b", "c"])
    staged.claim_for_sending(3)
    assert staged.mark_loaded("a", "r2", kingdee_id="7", bill_number="FKD1", doc_status="A")
    assert staged.mark_refused("b", "r2", "FCONTACTUNIT: no such employee")
    assert staged.return_to_pending(["c"], "r2", "session expired") == 1
    assert not staged.mark_refused("a", "r2", "too late")  # only from sending
    bills = staged.bills()
    assert (bills["a"].state, bills["a"].bill_number, bills["a"].doc_status) == (BillState.LOADED, "FKD1", "A")
    assert (bills["b"].state, bills["b"].last_error) == (BillState.FAILED, "FCONTACTUNIT: no such employee")
    assert bills["c"].state == BillState.PENDING
    assert [b.instance_id for b in staged.loaded_bills_behind(staging.DocumentStatus.AUDITED)] == ["a"]
    staged.record_doc_status(["a"], staging.DocumentStatus.AUDITED)
    assert staged.loaded_bills_behind(staging.DocumentStatus.AUDITED) == []
    assert [c.instance_id for c in staged.claim_for_sending(10)] == ["c"]  # sent again, the others not


def test_rejects_replace_earlier_outcomes_and_replay_finds_them(staged):
    store_bills(staged, ["a"])
    reject = staging.RejectRecord("a", "Ba", "FCONTACTUNIT", "unmapped_employee", "no employee for u1")
    staged.save_transform({"a": 1}, [], [reject], [], "r2")
    assert staged.bills() == {}
    assert staged.claims_to_transform(10) == []
    assert [c.instance_id for c in staged.claims_to_transform(10, include_rejected=True)] == ["a"]
    summary = staged.summary()
    assert summary.rejected_by_reason == {"unmapped_employee": 1}
    assert summary.rejected_claims[0].reason == "no employee for u1"


def test_summary_counts_money_exactly_and_as_text(staged):
    store_bills(staged, ["a", "b"], amount="0.10")
    staged.store_answers({"r": answer("r", "RUNNING", "")}, "r1")
    summary = staged.summary(run_id="r1")
    assert (summary.claims_seen, summary.approved, summary.still_running) == (3, 2, 1)
    assert summary.money_by_state == {BillState.PENDING: Decimal("0.20")}
    as_dict = summary.to_dict()
    assert as_dict["money_by_state"] == {"pending": "0.20"}
    assert as_dict["bills_by_state"] == {"pending": 2}
    assert staged.summary(run_id="another run").claims_seen == 0


def test_ledger_is_written_once_per_loaded_bill(staged):
    store_bills(staged, ["a", "b"])
    staged.claim_for_sending(2)
    staged.mark_loaded("a", "r1", kingdee_id="7", bill_number="FKD1", doc_status=None)
    assert staged.record_ledger(comments_enabled=True) == 1
    assert staged.record_ledger(comments_enabled=True) == 0
    [entry] = staged.comments_to_post()
    assert (entry.instance_id, entry.bill_number, entry.amount) == ("a", "FKD1", Decimal("10.50"))
    assert staged.comments_to_post(instance_ids=["b"]) == []
    staged.mark_comment_posted("a")
    assert staged.comments_to_post() == []
    assert staged.summary().comments_by_state == {staging.CommentState.DONE: 1}


def test_already_billed_answers_for_the_asked_business_ids_only(staged):
    store_bills(staged, ["a", "b", "c"])
    assert staged.billed_business_ids(["Ba", "Bc", "Bzz", ""]) == {"Ba": "a", "Bc": "c"}
    assert staged.billed_business_ids(["Ba", "Bc"], exclude=["a"]) == {"Bc": "c"}
