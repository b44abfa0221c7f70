"""Airflow discovers both connection types, their hooks, their UI forms and the notifier through the entry point."""

from __future__ import annotations

import pytest
from airflow.providers_manager import ProvidersManager
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime


@pytest.fixture(scope="module")
def providers() -> ProvidersManager:
    """What the API server and its connection form see."""
    return ProvidersManager()


@pytest.fixture(scope="module")
def runtime() -> ProvidersManagerTaskRuntime:
    """What tasks see when they resolve a connection type to its hook."""
    return ProvidersManagerTaskRuntime()


@pytest.mark.parametrize(("conn_type", "hook_class", "fields"), [
    ("dingtalk", "dingtalk_kingdee.hooks.dingtalk.DingTalkHook", {"agent_id", "qps", "api_host"}),
    ("kingdee", "dingtalk_kingdee.hooks.kingdee.KingdeeHook", {"acct_id", "app_id", "lcid", "org_num", "auth_mode"}),
])
def test_connection_type_is_registered_with_its_form(providers, runtime, conn_type, hook_class, fields):
    hook = runtime.hooks[conn_type]
    assert hook is not None, f"{conn_type} hook failed to import"
    assert (hook.package_name, hook.hook_class_name) == ("dingtalk-kingdee", hook_class)
    widgets = {name for name in providers.connection_form_widgets if name.startswith(f"extra__{conn_type}__")}
    assert widgets == {f"extra__{conn_type}__{field}" for field in fields}
    behaviour = providers.field_behaviours[conn_type]
    assert {"schema", "port"} <= set(behaviour["hidden_fields"])
    assert {"host", "login", "password"} <= set(behaviour["relabeling"])


def test_the_robot_connection_type_stays_the_dingding_providers(runtime):
    assert runtime.hooks["dingding"].hook_class_name.endswith("DingdingHook")


def test_provider_info_lists_hooks_and_notifications_like_airflows_own_providers(providers):
    data = providers.providers["dingtalk-kingdee"].data
    integrations = {i["integration-name"] for i in data["integrations"]}
    hook_modules = {m for h in data["hooks"] for m in h["python-modules"]}
    assert hook_modules == {"dingtalk_kingdee.hooks.dingtalk", "dingtalk_kingdee.hooks.kingdee"}
    assert {h["integration-name"] for h in data["hooks"]} <= integrations
    assert {c["hook-name"] for c in data["connection-types"]} == integrations


def test_the_notifier_is_discovered(providers):
    from dingtalk_kingdee.notifications import DingTalkRobotNotifier

    path = "dingtalk_kingdee.notifications.DingTalkRobotNotifier"
    assert path in providers.notification
    assert f"{DingTalkRobotNotifier.__module__}.{DingTalkRobotNotifier.__name__}" == path
