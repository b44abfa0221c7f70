"""The product installs and runs from its wheel, with the emulators absent.

The wheel is built from a copy of the checkout (the build writes ``build/`` and ``*.egg-info`` beside the
sources) and installed into a fresh venv. Installing Airflow there would take minutes, so the venv reaches
the shared environment's dependencies through a ``.pth`` file holding the plain path of its
site-packages: a plain path line is added to ``sys.path`` as it is, and the editable-install ``.pth`` files
inside that folder are not processed, so neither the checkout's ``dingtalk_kingdee`` nor ``dk_emulators``
is importable there (the test checks both). The DAGs are then built by Airflow's ``DagBag`` from the
project's ``dags/`` with the schemes folder given by ``DK_SCHEMES_DIR``.
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "dingtalk_kingdee"
pytestmark = pytest.mark.slow

NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "airflow_home", "var", "build", "dist", "__pycache__",
                                     "*.egg-info", ".pytest_cache", ".ruff_cache", ".hypothesis")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _build_backend_present() -> bool:
    """Whether this environment already has the build backend pyproject.toml pins."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]
    for requirement in map(Requirement, requires):
        try:
            if importlib.metadata.version(requirement.name) not in requirement.specifier:
                return False
        except importlib.metadata.PackageNotFoundError:
            return False
    return True


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    # Offline when the pinned backend is at hand; otherwise pip fetches it, as `make venv` does for the
    # editable install.
    isolation = ["--no-build-isolation"] if _build_backend_present() else []
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *isolation,
                           "--wheel-dir", str(work / "dist"), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (built,) = (work / "dist").glob("dingtalk_kingdee-*.whl")
    return built


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """A fresh venv with the wheel installed; dependencies through a plain path to the shared ones."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # Without PYTHONPATH, and ignoring what is installed: from a checkout that has had `make venv`, the
    # editable install's plugins/dingtalk_kingdee.egg-info on PYTHONPATH would make pip skip the wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                           "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "shared_dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(shared)))
    return python, site


def test_wheel_holds_the_product_package_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    assert {n.split("/")[0] for n in names} == {PACKAGE, dist_info}
    assert not [n for n in names if "emulator" in n or re.search(r"(^|/)(tests?|conftest)\b", n)]
    sources = sorted(p.relative_to(ROOT / "plugins").as_posix()
                     for p in (ROOT / "plugins" / PACKAGE).rglob("*.py"))
    assert sorted(n for n in names if n.endswith(".py")) == sources


def test_wheel_declares_every_distribution_the_package_imports(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(metadata_name))
    declared = {_normalise(Requirement(r).name) for r in metadata.get_all("Requires-Dist", [])}
    assert not {"fastapi", "uvicorn"} & declared, "the emulators' dependencies leaked into the product"

    providers = importlib.metadata.packages_distributions()
    missing = set()
    for path in (ROOT / "plugins" / PACKAGE).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("__future__", PACKAGE):
                    continue
                if module.startswith("airflow.providers."):
                    candidates = {"apache-airflow-providers-" + module.split(".")[2].replace("_", "-")}
                else:
                    candidates = {_normalise(d) for d in providers.get(top, [top])}
                if not candidates & declared:
                    missing.add(f"{module} ({path.name})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


SMOKE = textwrap.dedent("""
    import importlib.metadata, importlib.util, json, sys
    from pathlib import Path

    site, checkout = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    assert importlib.util.find_spec("dk_emulators") is None, "the emulators are importable"
    try:
        import dk_emulators  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("import dk_emulators succeeded")

    # The editable installs of the shared environment stay out: no other folder offers either package.
    for entry in map(Path, filter(None, sys.path)):
        for name in ("dingtalk_kingdee", "dk_emulators"):
            assert not (entry / name).is_dir() or entry.resolve() == site, f"{name} importable from {entry}"

    import dingtalk_kingdee
    assert Path(dingtalk_kingdee.__file__).resolve().is_relative_to(site), dingtalk_kingdee.__file__

    dist = importlib.metadata.distribution("dingtalk-kingdee")
    assert Path(dist.locate_file("")).resolve() == site, dist.locate_file("")
    (entry_point,) = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    info = entry_point.load()()

    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.module_loading import import_string
    hooks = [import_string(c["hook-class-name"]) for c in info.get("connection-types", [])]

    bag = DagBag(dag_folder=str(checkout / "dags"))
    # The defaults, too, follow Airflow's folders wherever the package lies.
    import os
    from dingtalk_kingdee.settings import get_settings
    given = get_settings()
    os.environ.pop("DK_SCHEMES_DIR"), os.environ.pop("DK_VAR_DIR")
    defaults = get_settings()
    from_checkout = sorted(name for name, module in list(sys.modules.items())
                           if getattr(module, "__file__", None)
                           and Path(module.__file__).resolve().is_relative_to(checkout / "plugins"))
    print(json.dumps({
        "package_name": info["package-name"],
        "versions": [dist.version, dingtalk_kingdee.__version__, *info["versions"]],
        "connection_types": sorted(c["connection-type"] for c in info.get("connection-types", [])),
        "hook_modules_in_wheel": all(Path(sys.modules[h.__module__].__file__).resolve().is_relative_to(site)
                                     for h in hooks),
        "dag_ids": sorted(bag.dag_ids),
        "import_errors": {k: v[-500:] for k, v in bag.import_errors.items()},
        "from_checkout": from_checkout,
        "schemes_dir": [str(given.schemes_dir), str(defaults.schemes_dir)],
        "var_dir": [str(given.var_dir), str(defaults.var_dir)],
    }))
""")


def test_installed_wheel_imports_and_builds_the_dags_without_the_emulators(clean_venv, tmp_path):
    python, site = clean_venv
    (tmp_path / "plugins").mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow_home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DK_SCHEMES_DIR": str(ROOT / "include" / "schemes"),
        "DK_VAR_DIR": str(tmp_path / "var"),
    }
    proc = subprocess.run([str(python), "-c", SMOKE, str(site), str(ROOT)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["import_errors"] == {}
    assert result["from_checkout"] == [], "modules came from the checkout, not the wheel"
    assert result["schemes_dir"] == [str(ROOT / "include" / "schemes")] * 2
    assert result["var_dir"] == [str(tmp_path / "var"), str(tmp_path / "airflow_home" / "dingtalk_kingdee")]
    assert result["package_name"] == "dingtalk-kingdee"
    assert len(set(result["versions"])) == 1, result["versions"]
    assert {"dingtalk", "kingdee"} <= set(result["connection_types"])
    assert result["hook_modules_in_wheel"]
    schemes = sorted(p.stem for p in (ROOT / "include" / "schemes").glob("*.yaml"))
    assert schemes and result["dag_ids"] == sorted(
        [f"dingtalk_kingdee_{scheme}" for scheme in schemes] + [f"dingtalk_kingdee_valuemaps_{s}" for s in schemes])
