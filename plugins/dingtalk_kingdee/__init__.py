"""DingTalk approved expense claims → Kingdee K/3Cloud payment bills (AP_PAYBILL), on Airflow 3."""

# The distribution's version (pyproject.toml reads it from here) and the provider info's.
__version__ = "0.1.0"
