"""Airflow DAGs: one manually triggered value-map DAG per integration scheme in include/schemes/.

See docs/schemes.md ("Value maps from the two systems") and the DAG's doc in the UI.
"""

from dingtalk_kingdee.valuemaps.dag import build_all

globals().update(build_all())
