"""The nightly CI airflow DAG, generated from include/config/nightly_ci.yaml ($NIGHTLY_CI_CONFIG)."""

import sys
from pathlib import Path

# The project root holds include/; make it importable wherever the dags folder is parsed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from include.nightly_ci.dag import dag_from_config

dag = dag_from_config()
