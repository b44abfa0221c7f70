"""Statuses: documented waiting ones wait, documented final ones are paid or not, any other is rejected."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dingtalk_kingdee.scheme import load_scheme
from dingtalk_kingdee.transform import transform_claims
from tests.fixtures.claims.builder import claim

SCHEME_FILE = Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml"


@pytest.mark.parametrize("status", ["completed", "", "WEIRD", "null", None])
def test_a_status_dingtalk_does_not_document_is_rejected_unknown_status(status: str | None) -> None:
    bad = claim("odd", "ODD", result="agree")
    if status is None:
        del bad["status"]
    else:
        bad["status"] = status
    raw = pd.DataFrame({"instance_id": ["odd", "ok"], "payload": [bad, claim("ok", "OK")]})
    result = transform_claims(raw, load_scheme(SCHEME_FILE))
    assert list(result.bills["instance_id"]) == ["ok"] and result.waiting.empty
    [reject] = result.rejects.to_dict("records")
    assert reject["reason_code"] == "unknown_status" and reject["field"] == "status"
    assert reject["reason"].startswith("claim ODD: status ") and "DingTalk" in reject["reason"]
