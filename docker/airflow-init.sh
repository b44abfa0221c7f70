#!/usr/bin/env bash
# airflow-init (docker-compose): migrate Airflow's metadata DB, give the simple auth manager its admin
# password, and create the staging tables, so the other services start on a ready system.
set -euo pipefail

: "${_AIRFLOW_WWW_USER_USERNAME:=admin}"
: "${_AIRFLOW_WWW_USER_PASSWORD:=admin}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?must point at the shared passwords file}"

echo "airflow-init: Airflow $(airflow version)"
mkdir -p "$(dirname "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}")" /opt/airflow/logs

airflow db migrate

# The simple auth manager reads {"user": "password"}; users and roles come from
# AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS (admin:admin = user "admin" with role admin).
python - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
user, password = os.environ["_AIRFLOW_WWW_USER_USERNAME"], os.environ["_AIRFLOW_WWW_USER_PASSWORD"]
try:
    with open(path) as f:
        passwords = json.load(f)
except (FileNotFoundError, ValueError):
    passwords = {}
passwords[user] = password
with open(path, "w") as f:
    json.dump(passwords, f)
print(f"airflow-init: password of UI user {user!r} written to {path}")
PY

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
