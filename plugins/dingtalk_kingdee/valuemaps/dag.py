"""The value-map DAG of a scheme: triggered by hand (no schedule), one task that writes the proposal
beside every value map and reports its counts; the ``apply`` Param adds the unambiguous lines.

Built here, apart from the sync DAG's factory, because it shares nothing with the sync's tasks but the
scheme; ``dags/dingtalk_kingdee_valuemaps.py`` builds one per scheme file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from dingtalk_kingdee.scheme import Scheme, load_scheme, load_schemes_apart
from dingtalk_kingdee.settings import get_settings

log = logging.getLogger(__name__)

DOC = """\
### Value maps of {title}

Reads the DingTalk contacts (department tree and users, connection `{dingtalk_conn_id}`: metered calls)
and the Kingdee base data (enabled, audited employees, departments and expense items, connection
`{kingdee_conn_id}`), pairs every key without a line with a Kingdee number by the strongest evidence
(job number = staff number, then exact name in the mapped department, then exact name alone), and
writes `<map>.proposal.csv` beside each value map of `include/schemes/{scheme_id}/`: the proposed lines
with their evidence, the conflicts (two candidates, none, a forbidden record) and the stale lines.

**Trigger form** `apply`: also append the unambiguous proposed lines to the maps. Lines a person wrote
are never changed. Afterwards, trigger the sync DAG with `replay_rejected` to pay the claims rejected
for those keys. The counts are in the task's XCom and log, with the DingTalk calls spent: they are in
the call ledger (run id `valuemaps__<DAG run id>`, step `valuemaps`) and count against the scheme's
`monthly_call_budget`; a month whose budget is reached fails the task before any DingTalk call. See
docs/schemes.md, "Value maps from the two systems".
"""


def build_valuemaps_dag(scheme: Scheme) -> DAG:
    dag_id = f"dingtalk_kingdee_valuemaps_{scheme.id}"
    scheme_file = scheme.path
    with DAG(
        dag_id=dag_id,
        description=f"Value maps of {scheme.title}",
        doc_md=DOC.format(title=scheme.title, scheme_id=scheme.id, dingtalk_conn_id=scheme.source.dingtalk_conn_id,
                          kingdee_conn_id=scheme.target.kingdee_conn_id),
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="Asia/Shanghai"),
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "finance-it", "retries": 0},
        tags=["dingtalk", "kingdee", "value-maps", scheme.id],
        params={"apply": Param(False, type="boolean", title="Apply",
                               description="Append the unambiguous proposed lines to the value maps.")},
    ) as dag:

        @task(task_id="suggest")
        def suggest() -> dict:
            from dingtalk_kingdee.valuemaps.run import run_id_for, suggest_for_scheme

            context = get_current_context()
            # Read the scheme again: its maps may have changed since the DAG file was parsed.
            result = suggest_for_scheme(load_scheme(scheme_file), apply=bool(context["params"].get("apply")),
                                        run_id=run_id_for(context["run_id"]))
            log.info("%s", result.text())
            return result.counts()

        suggest()
    return dag


def build_all(schemes_dir: Path | None = None) -> dict[str, DAG]:
    """One value-map DAG per scheme file in the schemes folder, keyed by DAG id."""
    dags = {}
    # A broken scheme file is left out here; dags/dingtalk_kingdee_scheme_errors.py reports it.
    for scheme in load_schemes_apart(schemes_dir or get_settings().schemes_dir)[0]:
        dag = build_valuemaps_dag(scheme)
        dags[dag.dag_id] = dag
    return dags
