"""Provider metadata: integrations, hooks, notifications, and the ``dingtalk`` and ``kingdee``
connection types with their UI forms (laid out as Airflow's own providers do, e.g. Slack's).

Airflow (3.2+) reads the form fields (``conn-fields``) and the field behaviour
(``ui-field-behaviour``) from here; the values land in the connection's extra under these names.
"""

from __future__ import annotations

from dingtalk_kingdee import __version__


def _text(label: str, description: str, default: str | None = None) -> dict:
    schema: dict = {"type": ["string", "null"]}
    if default is not None:
        schema["default"] = default
    return {"label": label, "description": description, "schema": schema}


def _integer(label: str, description: str, default: int, minimum: int = 1) -> dict:
    return {"label": label, "description": description,
            "schema": {"type": ["integer", "null"], "default": default, "minimum": minimum}}


DINGTALK_INTEGRATION = "DingTalk Approval (OA)"
KINGDEE_INTEGRATION = "Kingdee K/3Cloud WebAPI"

DINGTALK_FIELDS = {
    "agent_id": _text("Agent ID", "AgentId of the internal app (messages only; the approval API does not use it)"),
    "qps": _integer("QPS budget", "Calls per second per API this app may make (standard edition: 20)", 20),
    "api_host": _text("API host (Stream mode)", "Base URL of the /v1.0 API, where event-driven runs open their "
                      "Stream connection; empty = https://api.dingtalk.com beside oapi.dingtalk.com, else the "
                      "Base URL"),
}

KINGDEE_FIELDS = {
    "acct_id": _text("Account set ID (acctID)", "The data centre (账套) id, e.g. 6500a1b2c3d4e5"),
    "app_id": _text("App ID", "Third-party app id <clientId>_<secret part>; needed for signature mode "
                    "and for LoginByAppSecret"),
    "lcid": _integer("Language (LCID)", "2052 = simplified Chinese", 2052),
    "org_num": _text("Organisation number", "Organisation the API user acts in (0 = default)", "0"),
    "auth_mode": {
        "label": "Auth mode",
        "description": "session: log in and reuse the session; signature: sign every request (official SDK)",
        "schema": {"type": ["string", "null"], "enum": ["session", "signature", None], "default": "session"},
    },
}


def get_provider_info() -> dict:
    return {
        "package-name": "dingtalk-kingdee",
        "name": "DingTalk → Kingdee",
        "description": "DingTalk approval API and Kingdee K/3Cloud WebAPI hooks for expense-claim sync.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": DINGTALK_INTEGRATION, "external-doc-url": "https://open.dingtalk.com/document/",
             "tags": ["service"]},
            {"integration-name": KINGDEE_INTEGRATION, "external-doc-url": "https://open.kingdee.com/",
             "tags": ["service"]},
        ],
        "hooks": [
            {"integration-name": DINGTALK_INTEGRATION, "python-modules": ["dingtalk_kingdee.hooks.dingtalk"]},
            {"integration-name": KINGDEE_INTEGRATION, "python-modules": ["dingtalk_kingdee.hooks.kingdee"]},
        ],
        "connection-types": [
            {
                "connection-type": "dingtalk",
                "hook-class-name": "dingtalk_kingdee.hooks.dingtalk.DingTalkHook",
                "hook-name": DINGTALK_INTEGRATION,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"host": "Base URL", "login": "App key (AppKey)",
                                   "password": "App secret (AppSecret)"},
                    "placeholders": {"host": "https://oapi.dingtalk.com", "login": "dingxxxxxxxxxxxxxxxx",
                                     "password": "app secret", "agent_id": "123456789", "qps": "20"},
                },
                "conn-fields": DINGTALK_FIELDS,
            },
            {
                "connection-type": "kingdee",
                "hook-class-name": "dingtalk_kingdee.hooks.kingdee.KingdeeHook",
                "hook-name": KINGDEE_INTEGRATION,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"host": "Server URL", "login": "User", "password": "Password or app secret"},
                    "placeholders": {"host": "https://erp.example.com/k3cloud/", "login": "apiuser",
                                     "acct_id": "6500a1b2c3d4e5", "lcid": "2052", "org_num": "0"},
                },
                "conn-fields": KINGDEE_FIELDS,
            },
        ],
        "notifications": ["dingtalk_kingdee.notifications.DingTalkRobotNotifier"],
    }
