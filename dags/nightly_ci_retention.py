"""The nightly CI retention airflow DAG: expires artifacts and run-specific image tags."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from include.nightly_ci.retention.dag import retention_dag_from_config

dag = retention_dag_from_config()
