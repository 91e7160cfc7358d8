"""nightly-ci: the nightly CI pipeline of a multi-framework GPU project, on Airflow."""
