"""The transform step over staging with hostile answers among good ones (PostgreSQL when
DK_TEST_DATABASE_URL is set): a claim the database cannot hold is that claim's reject only."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dk_emulators.dingtalk.seed import SeedConfig, generate_claims

from dingtalk_kingdee import pipeline, staging
from dingtalk_kingdee.reasons import RejectReason
from dingtalk_kingdee.scheme import load_scheme

ROOT = Path(__file__).resolve().parents[2]
SCHEME = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")


def payable_claims(count: int) -> dict[str, dict]:
    now = datetime.now(UTC)
    seed = generate_claims(SeedConfig(count=count, seed=11, start=now - timedelta(days=5), end=now,
                                      status_weights={"agree": 1.0}, edge_rate=0.0))
    return {c.instance["process_instance_id"]: c.instance for c in seed if c.truth.payable}


def test_a_nul_anywhere_in_an_answer_rejects_that_claim_only(engine):
    claims = payable_claims(12)
    ids = sorted(claims)
    in_title, in_business_id, in_cell = ids[:3]
    claims[in_title]["title"] += "\x00"
    claims[in_business_id]["business_id"] = "\x00" + claims[in_business_id]["business_id"]
    table = next(f for f in claims[in_cell]["form_component_values"] if f.get("component_type") == "TableField")
    table["value"] = table["value"].replace('"value":"', '"value":"\x00', 1)  # a cell of the first row
    staged = staging.SchemeStaging(engine, SCHEME.id)
    assert staged.store_answers(copy.deepcopy(claims), "r1") == len(claims)

    counts = pipeline.transform(SCHEME, engine, pipeline.Run(run_id="r1", window_start=None, window_end=None))

    summary = staged.summary()
    rejected = {r.instance_id: r for r in summary.rejected_claims}
    assert set(rejected) == {in_title, in_business_id, in_cell}
    assert {r.reason_code for r in rejected.values()} == {RejectReason.MALFORMED_PAYLOAD}
    assert all(r.instance_id in r.reason and "NUL" in r.reason for r in rejected.values())
    assert set(staged.bills()) == set(ids) - set(rejected)
    assert counts["claims"] == len(claims)


@pytest.mark.parametrize(("original_id", "copy_id"), [
    (None, None),                # the same text
    ("TSP1", "tsp1 "),           # the same normal form: case and surrounding space differ
    ("TSP1", "\ttsp1\n"),        # white space the database's trim() would keep
])
def test_the_first_created_of_two_claims_sharing_a_business_id_wins_across_chunks(
        engine, monkeypatch, original_id, copy_id):
    """The copy sorts first by instance id, so it falls in an earlier chunk than the original."""
    monkeypatch.setattr(pipeline.transform_step, "TRANSFORM_CHUNK", 2)
    claims = payable_claims(8)
    ids = sorted(claims)
    original, copy_ = claims[ids[-1]], dict(claims[ids[0]])
    if original_id is not None:
        original["business_id"] = original_id
    copy_["business_id"] = copy_id if copy_id is not None else original["business_id"]
    copy_["create_time"] = "2099-01-01 00:00:00"  # created after the original
    claims[ids[0]] = copy_
    staged = staging.SchemeStaging(engine, SCHEME.id)
    staged.store_answers(claims, "r1")

    pipeline.transform(SCHEME, engine, pipeline.Run(run_id="r1", window_start=None, window_end=None))

    bills = staged.bills()
    assert ids[-1] in bills and ids[0] not in bills
    assert {(r.instance_id, r.reason_code) for r in staged.summary().rejected_claims} == {
        (ids[0], RejectReason.DUPLICATE_BUSINESS_ID)}
