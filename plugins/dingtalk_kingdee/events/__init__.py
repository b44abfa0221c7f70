"""DingTalk approval events as Airflow asset events: the triggerer's side of event-driven runs."""
