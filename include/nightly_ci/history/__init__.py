"""The test history: every test case of every night in a database (Postgres in
production, SQLite locally) behind an Airflow connection, and the rules that read it:
flaky or regression, quarantine with expiry, test-count drift.

Shared by the report (which writes a night's rows), the reruns (which ask what failed
before) and the triage page (which reads it); imports no stage.
"""
