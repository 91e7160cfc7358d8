"""Registers nightly-ci's additions to the Airflow UI (api-server): the extra links of its
tasks, the triage page (a FastAPI app under /nightly-ci behind Airflow's login, and its
entry in the Browse menu; include/nightly_ci/ui/triage.py), and the fix that keeps Clear
working on runs with the nightly's Deadline Alert (include/nightly_ci/ui/airflow_fixes.py)."""

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from include.nightly_ci.ui import airflow_fixes
from include.nightly_ci.ui.links import JUnitLink, RegistryImageLink, TestOutputLink

airflow_fixes.apply()

TRIAGE_PREFIX = "/nightly-ci"  # include.nightly_ci.ui.triage.PREFIX, without importing it here
# The UI's own path (a base_url of http://host/airflow serves everything under /airflow).
BASE_PATH = urlsplit(conf.get("api", "base_url", fallback="")).path.rstrip("/")


class NightlyCiPlugin(AirflowPlugin):
    name = "nightly_ci"
    operator_extra_links = [RegistryImageLink(), JUnitLink(), TestOutputLink()]
    # Opened inside the UI (a frame under /plugin/nightly-ci), from the Browse menu.
    external_views = [
        {
            "name": "Nightly CI triage",
            "href": f"{BASE_PATH}{TRIAGE_PREFIX}/",
            "url_route": "nightly-ci",
            "category": "browse",
            "destination": "nav",
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Made when the api-server asks for it: the scheduler, the dag-processor and the
        workers load this plugin too, and need neither FastAPI nor the page."""
        from include.nightly_ci.ui.triage import plugin_app

        return [plugin_app()]
