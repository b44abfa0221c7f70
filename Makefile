# Two commands matter: `make demo` and `make test`. Everything else is what they build on.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW_HOME := $(CURDIR)/airflow_home
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= INFO
# Local state (the default SQLite staging) in the checkout's var/; outside make it defaults under AIRFLOW_HOME.
# The schemes default to include/schemes beside the DAGs folder (see plugins/dingtalk_kingdee/settings.py).
export DK_VAR_DIR ?= $(CURDIR)/var
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/emulators:$(CURDIR)

.PHONY: venv airflow-db test test-reliability test-topology test-events topology test-ui lint demo airflow emulators bench wheel lock clean

# A project-local venv; reinstalls only when a requirements file or pyproject.toml changed.
$(STAMP): requirements.lock requirements.txt requirements-dev.txt pyproject.toml emulators/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	@$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e emulators
	@# The editable builds leave *.egg-info beside the sources; on PYTHONPATH it would be a second copy of the
	@# package metadata, and Airflow would see the airflow.plugins entry point twice ("already registered").
	rm -rf plugins/*.egg-info emulators/*.egg-info
	@touch $(STAMP)

venv: $(STAMP)

# Airflow's metadata database (SQLite under airflow_home/), migrated once and after upgrades.
$(AIRFLOW_HOME)/.migrated: $(STAMP)
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/migrate.log; exit 1)
	@touch $@

airflow-db: $(AIRFLOW_HOME)/.migrated

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) airflow-db lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The slow tests (tests/reliability, marker reliability; skipped by make test): the whole sync under
# DingTalk, Kingdee and process faults for both scheme variants, and at volume (10,000 claims), on
# PostgreSQL when DK_TEST_DATABASE_URL is set (.ci/run sets it). Outcomes in docs/reliability.md.
test-reliability: $(STAMP) airflow-db
	DK_RELIABILITY=1 $(BIN)/python -m pytest -p no:cacheprovider -m reliability tests $(PYTEST_ARGS)

# The production topology (docker-compose.yaml's services, as local processes: CeleryExecutor with two
# workers, PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379) driven through the REST API.
test-topology: $(STAMP)
	DK_TOPOLOGY=1 $(BIN)/python -m pytest tests/topology $(PYTEST_ARGS)

# DingTalk Stream events on real Airflow processes (api-server, scheduler, dag-processor, triggerer; LocalExecutor,
# PostgreSQL, Redis): approvals in the emulator become bills through asset-triggered runs, across triggerer crashes,
# dropped sockets and duplicated deliveries.
test-events: $(STAMP)
	DK_EVENTS=1 $(BIN)/python -m pytest -p no:cacheprovider tests/events $(PYTEST_ARGS)

# The same topology to look at: prints the UI address and its admin password (Ctrl-C stops all).
# Options of scripts/topology.py through TOPOLOGY_ARGS, e.g. TOPOLOGY_ARGS="--name mine --redis-db 9".
topology: $(STAMP)
	$(BIN)/python scripts/topology.py $(TOPOLOGY_ARGS)

# The demo keeps everything, its own Airflow home included, under var/demo/ (emptied at each start).
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# The Airflow UI on http://127.0.0.1:8080 with both emulators and demo connections (Ctrl-C stops all);
# its own Airflow home and state under var/airflow/ (FRESH=1 starts a new world).
airflow: $(STAMP)
	$(BIN)/python scripts/airflow_with_emulators.py $(if $(FRESH),--fresh)

# The UI in headless Chromium (Debian's chromium) over the same script on free ports; screenshots
# in var/ui-artefacts/.
test-ui: $(STAMP) lint
	DK_UI_TEST=1 $(BIN)/python -m pytest -p no:cacheprovider tests/ui $(PYTEST_ARGS)

emulators: $(STAMP)
	$(BIN)/python scripts/airflow_with_emulators.py --emulators-only

bench: $(STAMP)
	$(BIN)/python bench/bench_dingtalk.py
	$(BIN)/python bench/bench_kingdee.py
	$(BIN)/python bench/bench_transform.py
	$(BIN)/python bench/bench_sync.py

# The product wheel (the dingtalk_kingdee package only) in dist/, for `pip install` into an Airflow environment.
wheel: $(STAMP)
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir $(CURDIR)/dist .

# Regenerate the lock from the direct requirements in a scratch venv.
lock:
	rm -rf $(CURDIR)/.lockvenv && $(PYTHON) -m venv $(CURDIR)/.lockvenv
	$(CURDIR)/.lockvenv/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt
	{ echo '# Every package of a working install, pinned (generated with pip freeze from requirements.txt + requirements-dev.txt).'; \
	  echo '# Regenerate: make lock'; $(CURDIR)/.lockvenv/bin/pip freeze | sort -f; } > requirements.lock
	rm -rf $(CURDIR)/.lockvenv

clean:
	rm -rf $(VENV) $(AIRFLOW_HOME) var dist build
