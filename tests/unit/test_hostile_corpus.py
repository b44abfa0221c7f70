"""The hostile-claims corpus is data; docs/reliability.md lists every case with its outcome."""

from __future__ import annotations

import json
from pathlib import Path

from dingtalk_kingdee.reasons import RejectReason
from tests.fixtures.claims.hostile import CORPUS, hostile_claims

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def test_the_corpus_has_80_cases_or_more_with_known_outcomes_and_unique_claims() -> None:
    claims = hostile_claims("2024-03-05 10:12:00", "2024-03-06 09:01:02")
    assert len(claims) >= 80
    assert {c.expect for c in claims} <= {*RejectReason, "paid", "waiting"}
    assert len({c.instance["process_instance_id"] for c in claims}) == len(claims)


def test_docs_list_every_case_with_its_outcome() -> None:
    section = DOCS.read_text(encoding="utf-8").split("## Hostile claims", 1)[1]
    for case in json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]:
        assert f'| {case["id"]} | ' in section and f'`{case["expect"]}` |' in section, case["id"]
