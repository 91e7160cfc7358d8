"""The nightly CI culprit finder airflow DAG: finds the commit that broke a test, verified by running it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from include.nightly_ci.culprit_dag import culprit_dag_from_config

dag = culprit_dag_from_config()
