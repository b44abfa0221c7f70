"""Provider metadata so Airflow lists the ``dingtalk`` and ``kingdee`` connection types in its UI."""

from __future__ import annotations

from dingtalk_kingdee import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "dingtalk-kingdee",
        "name": "DingTalk → Kingdee",
        "description": "DingTalk approval API and Kingdee K/3Cloud WebAPI hooks for expense-claim sync.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "dingtalk",
                "hook-class-name": "dingtalk_kingdee.hooks.dingtalk.DingTalkHook",
            },
            {
                "connection-type": "kingdee",
                "hook-class-name": "dingtalk_kingdee.hooks.kingdee.KingdeeHook",
            },
        ],
    }
