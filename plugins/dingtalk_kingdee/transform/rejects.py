"""Reject rows: why a claim did not become a bill, naming the claim, the row and the offending value.

Every reason code is a ``RejectReason``; the frames hold its plain string value (as ``dk_rejects`` does).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from dingtalk_kingdee.reasons import RejectReason
from dingtalk_kingdee.transform.limits import shorten

REJECT_COLUMNS = ["instance_id", "business_id", "field", "reason_code", "reason"]


def reject_frame(instance_id: Any, business_id: Any, field: Any, code: RejectReason | str,
                 reason: Any) -> pd.DataFrame:
    """Rejects for many claims at once; each argument a Series (aligned) or a scalar. ``code`` may be
    a value map's ``reject_code`` text: it must still be a ``RejectReason``."""
    frame = pd.DataFrame({"instance_id": instance_id, "business_id": business_id, "field": field,
                          "reason_code": RejectReason(code).value, "reason": reason})
    return frame.reset_index(drop=True)[REJECT_COLUMNS]


def claim_label(business_id: pd.Series, instance_id: pd.Series) -> pd.Series:
    """``claim <business_id>``, or ``claim (no business_id) instance <id>`` (business ids are in
    their normal form, at most 128 characters; an instance id is shortened like any value)."""
    instance = pd.Series([shorten(i) for i in instance_id.astype(str).tolist()], index=instance_id.index)
    return ("claim " + business_id.astype(object).where(business_id.notna(), "(no business_id) instance "
                                                        + instance).astype(str))


def where(ctx: pd.DataFrame) -> pd.Series:
    """How a reason names the place: the claim, and for entries the table row."""
    place = claim_label(ctx["business_id"], ctx["instance_id"])
    if "row_no" in ctx:
        place = place + ": " + ctx["table"].astype(str) + " row " + ctx["row_no"].astype(str)
    return place


def quote(values: pd.Series) -> pd.Series:
    """Values in quotes, each at most 60 characters and an ellipsis: a reason (and every log line or
    alert quoting it) never carries a whole megabyte of claim data."""
    return pd.Series(['"' + shorten(v) + '"' for v in values.astype(str).tolist()], index=values.index, dtype=object)
