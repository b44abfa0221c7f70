-- Runs once, when the postgres volume is created: the project's staging tables (dk_*) live in their
-- own database, next to Airflow's metadata database "airflow" (Airflow 3 tasks may not use the ORM).
CREATE DATABASE staging OWNER airflow;
