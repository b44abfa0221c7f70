"""DingTalk approved expense claims → Kingdee K/3Cloud payment bills (AP_PAYBILL), on Airflow 3."""

__version__ = "0.1.0"
