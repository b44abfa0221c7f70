"""Raw DingTalk approval instances → flattened frames → Kingdee Models, rejects and waiting claims.

Pure pandas, no I/O. The pipeline calls ``transform_claims`` once per chunk of claims. Modules:

- ``flatten``: raw payloads → the claims frame and the rows frame (tables at every depth), through
  ``cells``, the one rule set for decoding a table's rows and cells;
- ``values``: missing-value spellings and China-time dates (money is ``dingtalk_kingdee.money``);
- ``mapping``: the scheme's field mappings → target values, then the Model dicts;
- ``checks`` and ``rejects``: the checks that reject a claim, and how a reject names the claim;
- ``outcomes``: ``transform_claims``, which runs all of it and gives each claim one outcome.
"""

from dingtalk_kingdee.transform.flatten import ROW_META
from dingtalk_kingdee.transform.mapping import BILL_COLUMNS
from dingtalk_kingdee.transform.outcomes import WAITING_COLUMNS, TransformResult, transform_claims
from dingtalk_kingdee.transform.rejects import REJECT_COLUMNS

__all__ = ["BILL_COLUMNS", "REJECT_COLUMNS", "ROW_META", "WAITING_COLUMNS", "TransformResult", "transform_claims"]
