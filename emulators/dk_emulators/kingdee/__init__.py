"""A local emulator of the Kingdee K/3Cloud WebAPI (AP_PAYBILL), faithful to the project's reference.

One module per concern: ``wire`` (service names, MsgCodes, exact JSON, the ResponseStatus envelope),
``auth`` (session login and per-request signatures), ``forms`` (form metadata, base data,
validation), ``store`` (bills in SQLite), ``services`` (Save, BatchSave, Submit, Audit, UnAudit,
Delete, View), ``query`` (ExecuteBillQuery, BillQuery) with ``filter_string`` (the FilterString
parser), ``admin`` (``/_emulator/...``), ``emulator`` (``KingdeeEmulator``, which assembles them
and injects faults), ``cli`` (``python -m dk_emulators.kingdee``) and ``basedata`` (the generator of
the demo base data). See docs/emulators-kingdee.md.
"""

from dk_emulators.kingdee.auth import (
    APP_SECRET_XOR_KEY,
    DEMO_APP_ID,
    DEMO_APP_SECRET,
    client_secret,
    encode_path,
    hmac_b64,
    signature_headers,
)
from dk_emulators.kingdee.cli import build_parser, main
from dk_emulators.kingdee.emulator import FAULT_KINDS, KingdeeEmulator, default_basedata
from dk_emulators.kingdee.forms import AP_PAYBILL, FORMS, BaseData, FieldSpec, FormSpec
from dk_emulators.kingdee.store import BillStore, StoredBill
from dk_emulators.kingdee.wire import KingdeeError, dumps, loads, parse_bool

# The demo base data as resolved at import (the emulator resolves it again when constructed).
DEFAULT_BASEDATA = default_basedata()

__all__ = [
    "APP_SECRET_XOR_KEY",
    "AP_PAYBILL",
    "DEFAULT_BASEDATA",
    "DEMO_APP_ID",
    "DEMO_APP_SECRET",
    "FAULT_KINDS",
    "FORMS",
    "BaseData",
    "BillStore",
    "FieldSpec",
    "FormSpec",
    "KingdeeEmulator",
    "KingdeeError",
    "StoredBill",
    "build_parser",
    "client_secret",
    "default_basedata",
    "dumps",
    "encode_path",
    "hmac_b64",
    "loads",
    "main",
    "parse_bool",
    "signature_headers",
]
