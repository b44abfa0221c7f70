"""Staging on a real database (PostgreSQL when DK_TEST_DATABASE_URL is set, as in CI)."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from dingtalk_kingdee import staging
from dingtalk_kingdee.money import to_cents

SCHEME = "s1"
FINAL = {"COMPLETED", "TERMINATED", "CANCELED"}


def answer(instance_id: str, status: str = "COMPLETED", result: str = "agree", title: str = "t") -> dict:
    return {"process_instance_id": instance_id, "business_id": f"B{instance_id}", "status": status,
            "result": result, "title": title}


def bill(instance_id: str, amount: str = "10.50") -> staging.BillRecord:
    return staging.BillRecord(instance_id=instance_id, business_id=f"B{instance_id}", match_value=f"B{instance_id}",
                              amount=Decimal(amount), payee="张伟", model={"FBillNo": f"B{instance_id}"})


@pytest.fixture
def engine(staging_url):
    engine = staging.connect(staging_url)
    yield engine
    engine.dispose()
    staging.get_engine.cache_clear()


def store_bills(engine, ids, amount="10.50"):
    staging.upsert_instances(engine, SCHEME, {i: answer(i) for i in ids}, FINAL, "r1")
    staging.save_transform(engine, SCHEME, dict.fromkeys(ids, 1), [bill(i, amount) for i in ids], [], [], "r1")


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
        assert conn.execute(sa.select(sa.func.count()).select_from(staging.schema_version)).scalar() == 1
    for e in engines:
        e.dispose()


def test_payload_version_bumps_only_when_the_answer_changes(engine):
    assert staging.upsert_instances(engine, SCHEME, {"a": answer("a", "RUNNING", "")}, FINAL, "r1") == 1
    assert staging.upsert_instances(engine, SCHEME, {"a": answer("a", "RUNNING", "")}, FINAL, "r2") == 0
    assert staging.final_instance_ids(engine, SCHEME, ["a"]) == set()
    assert staging.instances_to_transform(engine, SCHEME, 10) == []  # running claims are not transformed
    assert staging.upsert_instances(engine, SCHEME, {"a": answer("a")}, FINAL, "r3") == 1
    assert staging.final_instance_ids(engine, SCHEME, ["a", "zzz"]) == {"a"}
    [(instance_id, payload, version)] = staging.instances_to_transform(engine, SCHEME, 10)
    assert (instance_id, payload["status"], version) == ("a", "COMPLETED", 2)


def test_money_is_exact_in_cents(engine):
    store_bills(engine, ["a"], amount="12345678.91")
    [claimed] = staging.claim_for_sending(engine, SCHEME, 10)
    assert claimed.amount == Decimal("12345678.91")
    with pytest.raises(ValueError):
        to_cents(Decimal("1.005"))


def test_concurrent_claims_never_share_a_bill(engine, staging_url):
    ids = [f"c{i:03d}" for i in range(60)]
    store_bills(engine, ids)
    results: list[list[str]] = []
    lock = threading.Lock()

    def claimer():
        own = staging.create_engine(staging_url)
        got: list[str] = []
        while True:
            claimed = staging.claim_for_sending(own, SCHEME, 7)
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


def test_a_sent_bill_is_never_replaced_by_a_new_transform(engine):
    store_bills(engine, ["a", "b"])
    claimed = staging.claim_for_sending(engine, SCHEME, 1)
    assert [c.instance_id for c in claimed] == ["a"]
    counts = staging.save_transform(
        engine, SCHEME, {"a": 2, "b": 2}, [bill("a", "99.00"), bill("b", "20.00")], [], [], "r2")
    assert counts["kept_sent"] == 1
    rows = staging.bills_by_instance(engine, SCHEME)
    assert (rows["a"]["state"], rows["a"]["amount_cents"]) == ("sending", 1050)
    assert (rows["b"]["state"], rows["b"]["amount_cents"]) == ("pending", 2000)


def test_a_match_value_can_become_only_one_bill(engine):
    store_bills(engine, ["a"])
    other = staging.BillRecord("b", "Ba", "Ba", Decimal("1.00"), None, {})
    staging.upsert_instances(engine, SCHEME, {"b": answer("b")}, FINAL, "r1")
    with pytest.raises(sa.exc.IntegrityError):
        staging.save_transform(engine, SCHEME, {"b": 1}, [other], [], [], "r1")
    assert set(staging.bills_by_instance(engine, SCHEME)) == {"a"}


def test_bills_in_doubt_respects_the_sending_lease(engine):
    store_bills(engine, ["a", "b"])
    staging.claim_for_sending(engine, SCHEME, 2)
    assert staging.bills_in_doubt(engine, SCHEME, timedelta(minutes=15)) == []
    assert [i for i, _ in staging.bills_in_doubt(engine, SCHEME, timedelta(0))] == ["a", "b"]
    assert staging.set_bill_state(engine, SCHEME, "a", "unknown", "r2", expect=("sending",))
    assert [i for i, _ in staging.bills_in_doubt(engine, SCHEME, timedelta(minutes=15))] == ["a"]
    assert not staging.set_bill_state(engine, SCHEME, "a", "loaded", "r2", expect=("pending",))


def test_rejects_replace_earlier_outcomes_and_replay_finds_them(engine):
    store_bills(engine, ["a"])
    reject = staging.RejectRecord("a", "Ba", "FCONTACTUNIT", "unmapped_employee", "no employee for u1")
    staging.save_transform(engine, SCHEME, {"a": 1}, [], [reject], [], "r2")
    assert staging.bills_by_instance(engine, SCHEME) == {}
    assert staging.instances_to_transform(engine, SCHEME, 10) == []
    assert [i for i, _, _ in staging.instances_to_transform(engine, SCHEME, 10, include_rejected=True)] == ["a"]
    summary = staging.summary(engine, SCHEME)
    assert summary["rejected_by_reason"] == {"unmapped_employee": 1}
    assert summary["rejected_claims"][0]["reason"] == "no employee for u1"


def test_ledger_is_written_once_per_loaded_bill(engine):
    store_bills(engine, ["a", "b"])
    staging.claim_for_sending(engine, SCHEME, 2)
    staging.set_bill_state(engine, SCHEME, "a", "loaded", "r1", kingdee_id="7", bill_number="FKD1")
    assert staging.record_ledger(engine, SCHEME, comments_enabled=True) == 1
    assert staging.record_ledger(engine, SCHEME, comments_enabled=True) == 0
    [entry] = staging.comments_to_send(engine, SCHEME)
    assert (entry["instance_id"], entry["bill_number"], entry["amount_cents"]) == ("a", "FKD1", 1050)
    staging.set_comment_state(engine, SCHEME, "a", "done")
    assert staging.comments_to_send(engine, SCHEME) == []


def test_already_billed_answers_for_the_asked_business_ids_only(engine):
    store_bills(engine, ["a", "b", "c"])
    assert staging.already_billed(engine, SCHEME, ["Ba", "Bc", "Bzz", ""]) == {"Ba": "a", "Bc": "c"}
    assert staging.already_billed(engine, SCHEME, ["Ba", "Bc"], exclude=["a"]) == {"Bc": "c"}
