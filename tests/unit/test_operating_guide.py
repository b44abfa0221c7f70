"""The operating guide's production steps (docs/operating.md, "Production") held to what they name.

A guide rots quietly: a make target renamed, an Airflow command that moved, a setting the compose file
gained but the native steps never set. These tests read the guide's fenced command blocks and check
them against the Makefile, Airflow's own CLI parser and configuration, the compose file and
scripts/topology.py; the environment-file step runs as written (it only writes a file).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from scripts.topology import ENV_FILE, HEALTHY_COMPONENTS, LOCAL_KEYS, PLACEMENT_KEYS, read_env_file

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "operating.md"
COMPOSE = ROOT / "docker-compose.yaml"
SETTINGS = ROOT / "plugins" / "dingtalk_kingdee" / "settings.py"
# Natively, what the image sets (docker/Dockerfile: the dags and plugins folders, DK_VAR_DIR; the base
# image's AIRFLOW_HOME) must be in the environment file; DK_SCHEMES_DIR follows the dags folder.
NATIVE_PATH_KEYS = {"AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "DK_VAR_DIR"}
PROJECT_PATH = re.compile(r"\b(?:docker|scripts|include|dags|plugins|docs)/[\w./-]*\w")


def guide_part(heading: str) -> str:
    """The text under a heading (``## ...`` or ``### ...``) up to the next heading of its level or above."""
    part: list[str] | None = None
    level, fenced = 0, False
    for line in GUIDE.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        marks = None if fenced else re.match(r"(#+) ", line)  # a "# comment" in a block is no heading
        if marks and part is not None and len(marks.group(1)) <= level:
            break
        if part is not None:
            part.append(line)
        elif marks and line[marks.end():].startswith(heading):
            part, level = [], len(marks.group(1))
    assert part is not None, f"docs/operating.md has no heading {heading!r}"
    return "".join(part)


def fenced_blocks(text: str) -> list[str]:
    """The fenced blocks of a part, indentation (of a numbered step) removed."""
    return [re.sub(rf"^{indent}", "", body, flags=re.M)
            for indent, body in re.findall(r"^( *)```\w*\n(.*?)^\1```", text, flags=re.M | re.S)]


def command_lines(text: str) -> list[list[str]]:
    """Every command of the fenced blocks as words (comments dropped, here-document bodies skipped)."""
    commands = []
    for block in fenced_blocks(text):
        heredoc_end = None
        for line in block.replace("\\\n", " ").splitlines():
            if heredoc_end:
                heredoc_end = None if line.strip() == heredoc_end else heredoc_end
                continue
            marker = re.search(r"<<'?(\w+)'?", line)
            heredoc_end = marker.group(1) if marker else None
            for part in re.split(r"\s*;\s*", line):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:  # not a command: a `KEY=<the admin's password>` line to fill in
                    continue
                if words:
                    commands.append(words)
    return commands


def production() -> str:
    return guide_part("6. Production")


def compose_environment() -> dict:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return compose["services"]["airflow-scheduler"]["environment"]


@pytest.fixture(scope="module")
def native_env_file(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Step 3 of "Without Docker", run as written in a scratch checkout folder."""
    block = next(b for b in fenced_blocks(guide_part("Without Docker")) if "> production.env" in b)
    checkout = tmp_path_factory.mktemp("checkout")
    home = checkout / "home"
    home.mkdir()
    result = subprocess.run(["bash", "-euc", block], cwd=checkout, capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"], "HOME": str(home)})
    assert result.returncode == 0, result.stderr
    path = checkout / "production.env"
    assert path.stat().st_mode & 0o077 == 0, "the environment file holds secrets: the operator's alone"
    return path, read_env_file(path)


def test_the_environment_file_sets_what_compose_sets_for_itself(native_env_file):
    """Every address and secret compose gives every Airflow service without a default, plus where the
    project and Airflow's state lie; nothing the native runner does not know."""
    _, values = native_env_file
    compose = compose_environment()
    optional = {key for key in PLACEMENT_KEYS if re.fullmatch(r"\$\{\w+:-[^}]*\}", str(compose[key]))}
    required = (set(PLACEMENT_KEYS) - optional) | NATIVE_PATH_KEYS
    assert required - set(values) == set(), "the guide's production.env lacks these"
    assert set(values) <= set(PLACEMENT_KEYS) | set(LOCAL_KEYS) | NATIVE_PATH_KEYS
    assert all(values.values()), [k for k, v in values.items() if not v]


def test_the_environment_file_has_usable_secrets_and_addresses(native_env_file):
    from cryptography.fernet import Fernet

    path, values = native_env_file
    Fernet(values["AIRFLOW__CORE__FERNET_KEY"].encode())
    assert len({values["AIRFLOW__API_AUTH__JWT_SECRET"], values["AIRFLOW__API__SECRET_KEY"]}) == 2
    assert all(len(values[k]) >= 32 for k in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"))
    compose = compose_environment()
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "STAGING_DATABASE_URL"):
        # The same SQLAlchemy drivers as the compose file's (both are in the lock).
        assert sa.make_url(values[key]).drivername == sa.make_url(re.sub(r"\$\{[^}]*\}", "x", compose[key])).drivername
    assert values["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + values["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    broker, limiter = values["AIRFLOW__CELERY__BROKER_URL"], values["DK_RATE_LIMIT_REDIS_URL"]
    assert broker.startswith("redis://") and limiter.startswith("redis://") and broker != limiter
    assert values["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    checkout = path.parent
    assert values["AIRFLOW__CORE__DAGS_FOLDER"] == str(checkout / "dags")
    assert values["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(checkout / "plugins")


def test_step_4_gives_every_process_both_files_as_compose_reads_them(native_env_file):
    """`set -a; . docker/airflow.env; . ./production.env` in bash sets exactly what docker-compose's
    env_file reading of the same lines gives (no quoting or interpolation that bash reads otherwise)."""
    path, values = native_env_file
    block = next(b for b in fenced_blocks(guide_part("Without Docker")) if ". ./production.env" in b)
    sourcing = next(line for line in block.splitlines() if ". ./production.env" in line)
    sourcing = sourcing.replace(". docker/airflow.env", f". {shlex.quote(str(ENV_FILE))}")
    result = subprocess.run(["bash", "-c", f"{sourcing}; {shlex.quote(sys.executable)} -c "
                             "'import json, os; print(json.dumps(dict(os.environ)))'"],
                            cwd=path.parent, capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    expected = {**read_env_file(ENV_FILE), **values}
    assert {k: seen.get(k) for k in expected} == expected


def test_the_compose_secrets_block_sets_every_secret_the_stack_requires():
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text(encoding="utf-8")))
    block = next(b for b in fenced_blocks(guide_part("With docker-compose")) if "POSTGRES_PASSWORD=" in b)
    named = set(re.findall(r"^(\w+)=", block, flags=re.M))
    assert required and required == named


def test_the_health_check_names_every_component_the_topology_waits_for():
    step = guide_part("Without Docker")
    for component in HEALTHY_COMPONENTS:
        assert f"`{component}`" in step, component


def whole_guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def test_make_targets_and_topology_options_exist():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    help_text = subprocess.run([sys.executable, str(ROOT / "scripts" / "topology.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    commands = [words for words in command_lines(whole_guide()) if words[0] == "make"]
    assert [words for words in command_lines(production()) if words[0] == "make"], "the production steps name no make"
    for words in commands:
        target = next(w for w in words[1:] if "=" not in w)
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"make {target}: no such target"
        for assignment in (w for w in words[1:] if w.startswith("TOPOLOGY_ARGS=")):
            assert "$(TOPOLOGY_ARGS)" in makefile
            for option in re.findall(r"--[\w-]+", assignment):
                assert option in help_text, f"scripts/topology.py has no {option}"


def test_files_named_by_the_production_steps_exist():
    named = set(PROJECT_PATH.findall(production()))
    assert "docker/airflow-init.sh" in named
    missing = sorted(p for p in named if not (ROOT / p).exists() and "<" not in p)
    assert not missing, missing


def airflow_arguments(words: list[str]) -> list[str] | None:
    """The arguments of an `airflow` command line (after `KEY=value` prefixes, or run by `docker compose
    exec <service>`); None for any other command."""
    start = 0
    while start < len(words) and re.match(r"\w+=", words[start]):
        start += 1
    if words[start:start + 1] == ["airflow"]:
        args = words[start + 1:]
    elif "exec" in words and "airflow" in words[words.index("exec") + 2:]:
        args = words[words.index("airflow", words.index("exec") + 2) + 1:]
    else:
        return None
    return [word.strip("[]") for word in args]  # `[--dry-run]`: an optional option is still an option


def test_airflow_commands_and_options_exist_in_airflow_cli():
    """Each `airflow ...` of the guide's command blocks (`docker compose exec ... airflow ...` too),
    walked through Airflow's own argument parser as the services are configured (docker/airflow.env:
    CeleryExecutor, whose `celery` commands the executor adds, and the FAB auth manager)."""
    commands = [args for args in map(airflow_arguments, command_lines(whole_guide())) if args is not None]
    assert any(c[:2] == ["celery", "worker"] for c in commands)
    script = """
import argparse, json, sys
from airflow.cli.cli_parser import get_parser

def subcommands(parser):
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)

problems = []
for args in json.loads(sys.argv[1]):
    parser, path = get_parser(), ["airflow"]
    while args and subcommands(parser) is not None:
        choices = subcommands(parser)
        if args[0] not in choices:
            problems.append(f"{' '.join(path)}: no command {args[0]!r}")
            break
        path.append(args[0])
        parser, args = choices[args[0]], args[1:]
    else:
        if subcommands(parser) is not None:
            problems.append(f"{' '.join(path)} needs a subcommand")
        options = {s for a in parser._actions for s in a.option_strings}
        problems += [f"{' '.join(path)}: no option {w}" for w in args
                     if w.startswith("-") and w.split("=")[0] not in options]
print(json.dumps(problems))
"""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}, **read_env_file(ENV_FILE)}
    result = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_settings_the_guide_names_exist():
    """Every `AIRFLOW__SECTION__KEY` and `[section] key` of the whole guide is an option of the pinned
    Airflow (providers' options included); every DK_* / STAGING_* variable a setting of settings.py."""
    from airflow.configuration import conf

    text = GUIDE.read_text(encoding="utf-8")
    options = {(s.lower(), k.lower()) for s, k in re.findall(r"\bAIRFLOW__([A-Z_]+?)__([A-Z_]+)\b", text)}
    options |= set(re.findall(r"`\[(\w+)\] (\w+)`", text))
    conf.load_providers_configuration()
    described = conf.configuration_description  # every option, also those without a default
    unknown = sorted(f"[{s}] {k}" for s, k in options if k not in described.get(s, {}).get("options", {}))
    assert not unknown, unknown
    settings_source = SETTINGS.read_text(encoding="utf-8")
    variables = set(re.findall(r"\b((?:DK|STAGING)_[A-Z_]+[A-Z])\b", text))
    assert not sorted(v for v in variables if f'"{v}"' not in settings_source)


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def logged_format(path: Path, start: str) -> str:
    """The format string of the log call in ``path`` whose message begins with ``start``."""
    match = re.search(rf'log\.\w+\(\s*"({re.escape(start)}[^"]*)"', path.read_text(encoding="utf-8"))
    assert match, f"{path.name} no longer logs {start!r}"
    return match.group(1)


def test_the_event_steps_quote_what_the_product_logs_and_shows():
    """The lines an operator is told to look for, made by the code that writes them."""
    from types import SimpleNamespace

    from dk_emulators.dingtalk import DingTalkEmulator

    from dingtalk_kingdee.events.producer import describe
    from dingtalk_kingdee.pipeline.report_step import event_line

    part = flat(guide_part("Event-driven runs"))
    plugins = ROOT / "plugins" / "dingtalk_kingdee"
    opened = logged_format(plugins / "hooks" / "dingtalk_stream.py", "DingTalk Stream connection %d open")
    assert opened % (1, "dingtalk_default") in part
    event = SimpleNamespace(message_id="<id>", event_type="bpms_instance_change",
                            body={"processCode": "<process code>", "processInstanceId": "<id>", "type": "finish"})
    assert logged_format(plugins / "events" / "producer.py", "DingTalk event received") % describe(event) in part
    acked = logged_format(plugins / "events" / "producer.py", "DingTalk event acked")
    assert acked.split(":")[0] % (1, 0) in part
    planned = logged_format(plugins / "dag_factory.py", "plan: %d asset events of")
    assert planned.removeprefix("plan: %d ").replace("%s since %s", "dingtalk_approvals__<scheme> since ...") \
        .replace("%d of them", "N of them") in part
    assert "claims caught up from asset events no run took" in (plugins / "pipeline" / "report_step.py").read_text(
        encoding="utf-8") and "claims caught up from asset events no run took" in part
    for counters in ({"trigger": "asset_triggered", "received": 1, "claims": 1, "withdrawn": 0},
                     {"trigger": "scheduled", "received": 0, "claims": 0, "withdrawn": 0}):
        assert event_line(counters).strip() in part
    emulator = DingTalkEmulator(instances=[])
    shown = {**emulator.stream.state(), **emulator.stream.config()}
    for key in ("open_connections", "born", "delivered", "acked", "pending", "stream_retention_seconds"):
        assert key in shown and f"`{key}" in part, key
    assert "@app.get(\"/_emulator/stream\")" in (ROOT / "emulators" / "dk_emulators" / "dingtalk" /
                                                 "stream_routes.py").read_text(encoding="utf-8")


def test_the_scheme_setting_of_the_event_steps_turns_events_on():
    from dingtalk_kingdee.dag_factory import approval_asset
    from dingtalk_kingdee.scheme import load_scheme

    part = guide_part("Event-driven runs")
    setting = yaml.safe_load(next(b for b in fenced_blocks(part) if "events:" in b))
    scheme = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")
    with_events = scheme.model_validate({**scheme.model_dump(), **setting})
    assert with_events.events.enabled and not scheme.events.enabled
    assert approval_asset(with_events).name == f"dingtalk_approvals__{scheme.id}"
    assert "`dingtalk_approvals__<scheme id>`" in part
