"""Airflow import errors for broken scheme files: one bad file in include/schemes/ shows here, by
name and with what is wrong, while the DAGs of the other schemes stay (Airflow marks every DAG of a
file with an import error stale, so the errors are raised from this file, which builds no DAG).
"""

from dingtalk_kingdee.dag_factory import raise_scheme_errors

raise_scheme_errors()
