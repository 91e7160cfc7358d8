"""What nightly-ci adds to the Airflow UI: extra links, and a fix for an Airflow bug."""
