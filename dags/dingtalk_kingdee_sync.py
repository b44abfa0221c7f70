"""Airflow DAGs: one DingTalk → Kingdee sync DAG per integration scheme in include/schemes/.

See docs/schemes.md for the scheme format and the DAG's doc (in the UI) for how to operate it.
"""

from dingtalk_kingdee.dag_factory import build_all

globals().update(build_all())
