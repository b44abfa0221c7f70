#!/usr/bin/env bash
# airflow-init (docker-compose; scripts/topology.py runs it too): migrate Airflow's metadata DB (the
# FAB auth manager's tables included), create the first admin user, and create the staging tables,
# so the other services start on a ready system. Safe to run again: each step is idempotent.
set -euo pipefail

: "${_AIRFLOW_WWW_USER_USERNAME:=admin}"
: "${_AIRFLOW_WWW_USER_PASSWORD:?set the password of the first admin user (docs/operating.md)}"

echo "airflow-init: Airflow $(airflow version)"
mkdir -p "${AIRFLOW__LOGGING__BASE_LOG_FOLDER:-${AIRFLOW_HOME:-/opt/airflow}/logs}"

airflow db migrate

# The FAB auth manager keeps users and roles in the metadata DB; an existing user is left as it is
# (change a password in the UI or with `airflow users reset-password`).
airflow users create --role Admin --username "${_AIRFLOW_WWW_USER_USERNAME}" \
  --password "${_AIRFLOW_WWW_USER_PASSWORD}" --firstname Airflow --lastname Admin \
  --email "${_AIRFLOW_WWW_USER_EMAIL:-admin@example.com}"

# Fail here, not in the first task, when the staging database is unreachable; creates the dk_* tables.
python - <<'PY'
import os
from dingtalk_kingdee import staging
from dingtalk_kingdee.scheme import load_schemes
from dingtalk_kingdee.settings import get_settings

settings = get_settings()
engine = staging.connect(settings.staging_database_url)
schemes = [s.id for s in load_schemes(settings.schemes_dir)]
print(f"airflow-init: staging ready at {engine.url.render_as_string(hide_password=True)}; schemes {schemes}")
PY

if [ "$(airflow providers hooks | grep -cE '^(dingtalk|kingdee) ')" != 2 ]; then
  echo "airflow-init: the dingtalk/kingdee connection types are not registered (is the image built from docker/Dockerfile?)" >&2
  exit 1
fi
echo "airflow-init: done"
