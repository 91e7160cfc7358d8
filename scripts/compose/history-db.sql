-- The test history's own database on the compose stack's Postgres (run once, when the
-- server's volume is first made; on an older volume: createdb -U airflow nightly_ci_history).
CREATE DATABASE nightly_ci_history OWNER airflow;
