"""Offline checks of docker-compose.yaml and docker/ (no Docker engine runs where the tests run).

They catch what breaks a compose deployment before anyone starts it: a service without an image or
healthcheck, Airflow components that disagree on their database / broker / execution API, a file
that the compose file or the Dockerfile names but the repository lacks, demo connections that do not
point at the emulator services, a secret with a default, and a compose configuration that drifted
from the one `make test-topology` runs (docker/airflow.env and scripts/topology.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dingtalk_kingdee.provider import get_provider_info
from dingtalk_kingdee.scheme import load_scheme
from scripts.topology import ENV_FILE, LOCAL_KEYS, PLACEMENT_KEYS, read_env_file

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DEMO_ENV = ROOT / "docker" / "demo.env"
SCHEME = ROOT / "include" / "schemes" / "expense_to_paybill.yaml"
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
           "_AIRFLOW_WWW_USER_PASSWORD")
# What a production .env gives: every secret set (values irrelevant to these checks).
PRODUCTION_ENV = {name: f"secret-{name.lower()}" for name in SECRETS}


class MissingVariable(Exception):
    """A ${VAR:?message} whose variable is unset or empty: compose refuses to start."""


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message} with the given variables (empty when unset and
    no default; MissingVariable for a required one)."""
    env = PRODUCTION_ENV if env is None else env

    def substitute(match: re.Match) -> str:
        name, operator, word = match.groups()
        if env.get(name):
            return env[name]
        if operator == "?":
            raise MissingVariable(f"{name}: {word}")
        return word or ""

    return INTERPOLATION.sub(substitute, value)


def service_environment(service: dict, env: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment as its container gets it: env_file lines, then `environment`."""
    merged = {}
    for path in service.get("env_file", []):
        merged.update(read_env_file(ROOT / path))
    merged.update({k: interpolate(str(v), env) for k, v in service.get("environment", {}).items()})
    return merged


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def dockerfile_stages(text: str) -> dict[str, str]:
    """Build stage name -> its lines of the Dockerfile (from its FROM to the next FROM)."""
    parts = re.split(r"^(?=FROM\s)", text, flags=re.M)
    stages = {}
    for part in parts[1:]:
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", part)
        assert match, f"unnamed build stage: {part.splitlines()[0]}"
        stages[match.group(1)] = part
    return stages


def dockerfile_env(text: str) -> dict[str, str]:
    """ENV values of the Dockerfile with ${VAR} of earlier ENV lines substituted."""
    env: dict[str, str] = {}
    for statement in re.findall(r"^ENV\s+(.+?)(?<!\\)$", text.replace("\\\n", " "), flags=re.M):
        for key, value in re.findall(r"(\w+)=(\S+)", statement):
            env[key] = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), value)
    return env


def test_every_service_has_an_image_and_the_official_topology_is_there(services):
    expected = {"postgres", "redis", "airflow-init", *AIRFLOW_COMMANDS, "dingtalk-emulator", "kingdee-emulator"}
    assert expected <= set(services)
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name} has neither image nor build"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7.2-bookworm"


def test_long_running_services_have_healthchecks(services):
    for name, service in services.items():
        if name == "airflow-init":
            continue
        check = service.get("healthcheck", {}).get("test")
        assert check and check[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert "http://localhost:8080/api/v2/version" in services["airflow-apiserver"]["healthcheck"]["test"]
    assert "http://localhost:8974/health" in services["airflow-scheduler"]["healthcheck"]["test"]


def test_airflow_components_run_their_command_and_agree_on_configuration(services):
    reference = None
    for name, command in AIRFLOW_COMMANDS.items():
        service = services[name]
        assert service["command"] == command
        env = service_environment(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert "@postgres/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://") and "@redis:6379" in env[
            "AIRFLOW__CELERY__BROKER_URL"]
        assert "@postgres/airflow" in env["AIRFLOW__CELERY__RESULT_BACKEND"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"], "components need one shared JWT secret"
        shared = {k: v for k, v in env.items() if k.startswith(("AIRFLOW__", "STAGING_", "DK_"))}
        if reference is None:
            reference = shared
        assert shared == reference, f"{name} differs from the other Airflow components"
        assert service["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-apiserver"]["ports"] == ["8080:8080"]
    assert "airflow-apiserver" in services["airflow-worker"]["depends_on"]


def test_staging_database_is_created_by_the_postgres_init_script(services):
    url = interpolate(services["airflow-scheduler"]["environment"]["STAGING_DATABASE_URL"])
    assert url.startswith("postgresql+psycopg://") and url.endswith("@postgres/staging")
    init_mount = next(v for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v)
    init_dir = ROOT / init_mount.split(":")[0]
    scripts = " ".join(p.read_text(encoding="utf-8") for p in sorted(init_dir.glob("*.sql")))
    assert re.search(r"CREATE DATABASE staging\b", scripts)


def test_project_settings_named_in_compose_exist(services):
    settings_source = (ROOT / "plugins" / "dingtalk_kingdee" / "settings.py").read_text(encoding="utf-8")
    env_keys = set(services["airflow-scheduler"]["environment"])
    for key in sorted(k for k in env_keys if k.startswith(("DK_", "STAGING_"))):
        assert f'"{key}"' in settings_source, f"{key} is not a setting of settings.py"


def test_bind_mounts_and_build_files_exist(services, dockerfile):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    froms = [line for line in dockerfile.splitlines() if line.startswith("FROM")]
    assert froms and all(line.startswith("FROM apache/airflow:3.3.2-python3.11 AS ") for line in froms)
    for sources in re.findall(r"^COPY\s+(?:--chown=\S+\s+)?(.+)\s+\S+$", dockerfile, flags=re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_dockerfile_pins_the_airflow_of_the_requirements(dockerfile):
    pinned = re.search(r"^apache-airflow==(\S+)", (ROOT / "requirements.txt").read_text(), flags=re.M).group(1)
    assert f"apache/airflow:{pinned}-python3.11" in dockerfile
    assert f'"apache-airflow=={pinned}"' in dockerfile


def test_mounted_project_folders_are_the_ones_airflow_reads(services, dockerfile):
    env = dockerfile_env(dockerfile)
    targets = {v.split(":")[1] for v in services["airflow-scheduler"]["volumes"]}
    for key in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "DK_SCHEMES_DIR"):
        assert any(env[key] == t or env[key].startswith(t + "/") for t in targets), f"{key}={env[key]} not mounted"
    init_script = services["airflow-init"]["command"][0]
    copied = re.search(r"^COPY\s+(?:--chown=\S+\s+)?docker/airflow-init\.sh\s+(\S+)$", dockerfile, flags=re.M)
    assert copied and re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], copied.group(1)) == init_script


def test_demo_profile_serves_both_emulators_on_all_interfaces(services):
    for name, module, port in (("dingtalk-emulator", "dk_emulators.dingtalk", "8801"),
                               ("kingdee-emulator", "dk_emulators.kingdee", "8802")):
        service = services[name]
        assert service["profiles"] == ["demo"]
        assert service["entrypoint"][-1] == module and importlib.util.find_spec(module) is not None
        command = service["command"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert command[command.index("--port") + 1] == port
        assert f"localhost:{port}/_emulator/health" in " ".join(service["healthcheck"]["test"])


def test_emulators_run_from_their_own_image_and_the_product_image_has_none(services, dockerfile):
    stages = dockerfile_stages(dockerfile)
    assert set(stages) == {"product", "emulators"}
    assert list(stages)[-1] == "product", "a plain docker build must give the product image"
    assert not re.search(r"emulators|dk_emulators", stages["product"].split("\n", 1)[1]), \
        "the product image must not contain the emulators"
    airflow_images = set()
    for name, service in services.items():
        if name.startswith("airflow-"):
            assert service["build"]["target"] == "product", name
            airflow_images.add(service["image"])
    for name in ("dingtalk-emulator", "kingdee-emulator"):
        service = services[name]
        assert service["build"]["target"] == "emulators"
        assert service["image"] not in airflow_images
        assert not any(v.startswith(("./plugins", "./dags")) for v in service.get("volumes", []))


def test_emulator_image_installs_the_emulators_with_their_demo_data(services, dockerfile):
    stage = dockerfile_stages(dockerfile)["emulators"]
    env = dockerfile_env(stage)
    copies = dict(reversed(m) for m in re.findall(r"^COPY\s+(?:--chown=\S+\s+)?(\S+)\s+(\S+)$", stage, flags=re.M))
    copies = {re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], target): source for target, source in copies.items()}
    emulators_dir = next(target for target, source in copies.items() if source == "emulators")
    assert re.search(r"pip install [^\n]*--no-deps \$\{DK_EMULATORS_DIR\}/emulators", stage)
    assert (ROOT / "emulators" / "pyproject.toml").is_file() and emulators_dir.startswith(env["DK_EMULATORS_DIR"])
    # Installed, the emulators find the demo data through DK_DEMO_DIR: the image's copy of include/demo.
    assert copies[env["DK_DEMO_DIR"]] == "include/demo"
    for name in ("universe.json", "kingdee_basedata.json"):
        assert (ROOT / "include" / "demo" / name).is_file()
    # The Kingdee emulator's SQLite file lies in its named volume, in a folder the image creates.
    kingdee = services["kingdee-emulator"]
    db = kingdee["command"][kingdee["command"].index("--db") + 1]
    volume_target = next(v.split(":")[1] for v in kingdee["volumes"] if v.startswith("kingdee-emulator-data:"))
    assert db.startswith(volume_target + "/")
    assert volume_target == env["DK_EMULATORS_DIR"] + "/var" and "${DK_EMULATORS_DIR}/var" in stage


def test_demo_connections_point_at_the_emulator_services(services):
    demo = read_env_file(DEMO_ENV)
    assert demo["COMPOSE_PROFILES"] == "demo"
    scheme = load_scheme(SCHEME)
    conn_types = {c["connection-type"] for c in get_provider_info()["connection-types"]}
    expected = {scheme.source.dingtalk_conn_id: ("dingtalk", "http://dingtalk-emulator:8801"),
                scheme.target.kingdee_conn_id: ("kingdee", "http://kingdee-emulator:8802/k3cloud/")}
    env = services["airflow-worker"]["environment"]
    for conn_id, (conn_type, host) in expected.items():
        key = f"AIRFLOW_CONN_{conn_id.upper()}"
        assert interpolate(str(env[key]), PRODUCTION_ENV) == "", f"{key} must be empty without the demo env file"
        conn = json.loads(interpolate(str(env[key]), demo))
        assert conn["conn_type"] == conn_type and conn_type in conn_types
        assert conn["host"] == host
    # The emulators' default credentials (their CLIs' defaults).
    assert json.loads(demo["AIRFLOW_CONN_KINGDEE_DEFAULT"])["extra"]["acct_id"] == "demo-acct"


def test_named_volumes_are_declared(compose):
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("/", ".")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_init_script_is_valid_bash():
    import subprocess

    result = subprocess.run(["bash", "-n", str(ROOT / "docker" / "airflow-init.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- production-ready, one configuration


def test_compose_and_the_native_topology_share_one_configuration(services):
    """docker/airflow.env is loaded by every Airflow service and by scripts/topology.py; the compose
    file adds exactly the addresses and secrets the native runner sets for itself, nothing else."""
    shared = read_env_file(ENV_FILE)
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert not set(shared) & (set(PLACEMENT_KEYS) | set(LOCAL_KEYS)), "a shared setting would be overridden"
    for name in (*AIRFLOW_COMMANDS, "airflow-init"):
        service = services[name]
        assert service["env_file"] == [str(ENV_FILE.relative_to(ROOT))], name
        own = set(service["environment"]) - {"DUMB_INIT_SETSID", "_AIRFLOW_WWW_USER_USERNAME",
                                             "_AIRFLOW_WWW_USER_PASSWORD"}
        assert own == set(PLACEMENT_KEYS), f"{name}: {sorted(own ^ set(PLACEMENT_KEYS))}"
    # Local-only keys (filesystem, ports, queue) are the native runner's: compose must not carry them.
    assert not set(services["airflow-scheduler"]["environment"]) & set(LOCAL_KEYS)


def test_fab_auth_manager_and_celery_provider_are_pinned(services):
    env = service_environment(services["airflow-apiserver"])
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    for provider in ("apache-airflow-providers-fab", "apache-airflow-providers-celery"):
        pin = re.search(rf"^{provider}==(\S+)$", requirements, flags=re.M)
        assert pin, f"{provider} is not pinned in requirements.txt"
        assert f"{provider}=={pin.group(1)}" in lock.splitlines()
    assert not any("SIMPLE_AUTH_MANAGER" in key for key in env)


@pytest.mark.parametrize("secret", SECRETS)
def test_the_stack_refuses_to_start_without_each_secret(services, secret):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != secret}
    with pytest.raises(MissingVariable, match=secret):
        for service in services.values():
            service_environment(service, env)
    # And no secret has a default anywhere in the file.
    text = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(rf"\$\{{{secret}:?-", text)


def test_the_demo_env_file_sets_every_secret_and_a_valid_fernet_key(services):
    from cryptography.fernet import Fernet

    demo = read_env_file(DEMO_ENV)
    for service in services.values():
        service_environment(service, demo)  # no MissingVariable
    Fernet(demo["AIRFLOW_FERNET_KEY"].encode())


def test_the_init_script_creates_the_fab_admin_and_requires_its_password():
    script = (ROOT / "docker" / "airflow-init.sh").read_text(encoding="utf-8")
    assert re.search(r"^airflow users create --role Admin", script, flags=re.M)
    assert ": \"${_AIRFLOW_WWW_USER_PASSWORD:?" in script


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_docker_compose_validates_the_file_and_refuses_missing_secrets(tmp_path):
    def config(env_file: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["docker-compose", "--env-file", str(env_file), "config", "-q"], cwd=ROOT,
                              capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})

    demo = config(DEMO_ENV)
    assert demo.returncode == 0, demo.stderr
    production = tmp_path / "production.env"
    production.write_text("".join(f"{k}={v}\n" for k, v in PRODUCTION_ENV.items()), encoding="utf-8")
    assert config(production).returncode == 0
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    bare = config(empty)
    assert bare.returncode != 0 and "POSTGRES_PASSWORD" in bare.stderr, bare.stderr
