"""The nightly CI airflow DAG, generated from include/config/nightly_ci.yaml ($NIGHTLY_CI_CONFIG)."""

import gc
import sys
from pathlib import Path

# The project root holds include/; make it importable wherever the dags folder is parsed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Python's cycle collector is paused while the DAG is made: a 40-cell DAG allocates some
# 100,000 objects that all live on, and the collector walked them 28 times (about 5 ms of a
# 90 ms parse, measured). It runs again afterwards, as it was.
_gc_was_enabled = gc.isenabled()
gc.disable()
try:
    from include.nightly_ci.dag import dag_from_config

    dag = dag_from_config()
finally:
    if _gc_was_enabled:
        gc.enable()
