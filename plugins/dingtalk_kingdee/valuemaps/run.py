"""A suggestion run wired to the real systems: the scheme's DingTalk and Kingdee connections, and the
expense-item options of the claims stored in staging. Shared by the CLI and the value-map DAG."""

from __future__ import annotations

from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.valuemaps.suggest import SuggestResult, suggest


def suggest_for_scheme(scheme: Scheme, *, apply: bool = False) -> SuggestResult:
    from dingtalk_kingdee.hooks.dingtalk import DingTalkHook
    from dingtalk_kingdee.hooks.kingdee import KingdeeHook

    return suggest(scheme, DingTalkHook(scheme.source.dingtalk_conn_id), KingdeeHook(scheme.target.kingdee_conn_id),
                   apply=apply)
