"""Registers the nightly's extra links with the Airflow UI (api-server), and installs the
fix that keeps Clear working on runs with the nightly's Deadline Alert (see
include/nightly_ci/ui/airflow_fixes.py)."""

import sys
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from include.nightly_ci.ui import airflow_fixes
from include.nightly_ci.ui.links import JUnitLink, RegistryImageLink, TestOutputLink

airflow_fixes.apply()


class NightlyCiPlugin(AirflowPlugin):
    name = "nightly_ci"
    operator_extra_links = [RegistryImageLink(), JUnitLink(), TestOutputLink()]
