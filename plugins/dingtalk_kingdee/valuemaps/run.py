"""A suggestion run wired to the real systems: the scheme's DingTalk and Kingdee connections, and the
expense-item options of the claims stored in staging. Shared by the CLI and the value-map DAG."""

from __future__ import annotations

from dingtalk_kingdee import staging
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.settings import get_settings
from dingtalk_kingdee.valuemaps.model import MapKind
from dingtalk_kingdee.valuemaps.options import option_keys
from dingtalk_kingdee.valuemaps.suggest import SuggestResult, suggest


def stored_options(scheme: Scheme) -> dict[str, list[str]]:
    """Per expense-item map of the scheme, the keys found on the claims in staging."""
    names = [name for name, spec in scheme.value_maps.items() if spec.suggest == MapKind.EXPENSE_ITEM_NUMBER]
    if not names:
        return {}
    payloads = list(staging.SchemeStaging(staging.connect(get_settings().staging_database_url), scheme.id)
                    .stored_answers())
    return {name: option_keys(scheme, name, payloads) for name in names}


def suggest_for_scheme(scheme: Scheme, *, apply: bool = False) -> SuggestResult:
    from dingtalk_kingdee.hooks.dingtalk import DingTalkHook
    from dingtalk_kingdee.hooks.kingdee import KingdeeHook

    return suggest(scheme, DingTalkHook(scheme.source.dingtalk_conn_id), KingdeeHook(scheme.target.kingdee_conn_id),
                   options=stored_options(scheme), apply=apply)
