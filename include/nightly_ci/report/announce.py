"""The night's regressions, handed to the culprit finder: after the summary, each cell's
suite with test cases that failed every rerun and passed on the night before becomes a
finding (saved as "searching" in the history store, so the triage page shows it at once)
and one event of the Asset `{dag_id}.regressions` carries them all: the culprit DAG is
scheduled on that Asset, and the UI's asset graph shows the link. No regression (or no
way to search one): the task is skipped, and no event is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from include.nightly_ci.artifacts import ArtifactStore

if TYPE_CHECKING:
    from include.nightly_ci.history.store import HistoryStore
    from include.nightly_ci.report.results import Results

Suite = tuple[str, str, str]  # (cell, suite, task id)


def regressions(results: Results, suites: Mapping[str, tuple[str, str]]) -> dict[Suite, tuple[str, ...]]:
    """The night's regressions by suite: cases that failed every rerun and passed on the
    night before, not quarantined (a quarantined case is someone's already)."""
    from include.nightly_ci.history.records import REGRESSION

    found: dict[Suite, list[str]] = {}
    triage = results.triage
    for key, verdict in triage.verdicts.items():
        task_id, _, test = key.partition("::")
        if verdict == REGRESSION and key not in triage.quarantined and task_id in suites:
            found.setdefault((*suites[task_id], task_id), []).append(test)
    return {suite: tuple(sorted(tests)) for suite, tests in sorted(found.items())}


class AnnounceRegressionsOperator(BaseOperator):
    """Tells the culprit finder of the night's regressions, through an Asset event."""

    ui_color = "#fbe9e7"

    def __init__(
        self,
        *,
        store: ArtifactStore,
        suites: dict[str, tuple[str, str]],
        record_files: dict[str, str],
        history_conn_id: str | None,
        asset_name: str,
        **kwargs: Any,
    ):
        from airflow.sdk import Asset

        super().__init__(outlets=[Asset(name=asset_name)], retries=0, **kwargs)
        self.store = store
        self.suites = suites  # suite task id -> (cell, suite)
        self.record_files = record_files  # suite task id -> its record, relative to the run's folder
        self.history_conn_id = history_conn_id
        self.asset_name = asset_name

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException
        from sqlalchemy.exc import SQLAlchemyError

        from include.nightly_ci.errors import NightlyCiError

        try:
            return self._announce(context)
        except (OSError, ValueError, KeyError, NightlyCiError, SQLAlchemyError) as exc:
            # The night's verdict is made; a search that can't start must not turn it red.
            self.log.exception("The night's regressions could not be handed to the culprit finder")
            raise AirflowSkipException(f"not announced: {type(exc).__name__}: {exc}") from exc

    def _announce(self, context: Any) -> dict[str, Any]:
        from airflow.sdk import Asset
        from airflow.sdk.exceptions import AirflowSkipException

        from include.nightly_ci.report.results import Results

        run_id = context["dag_run"].run_id
        results = Results.from_json(json.loads((self.store.run_folder(run_id) / "results.json").read_text()))
        found = regressions(results, self.suites)
        if not found:
            raise AirflowSkipException("no regression tonight: nothing for the culprit finder")
        if not self.history_conn_id:
            raise AirflowSkipException("no history store (history.conn_id): a search needs the last good night")
        from include.nightly_ci.history.store import HistoryStore

        store = HistoryStore.from_connection(self.history_conn_id)
        try:
            events = [e for suite, tests in found.items() if (e := self._finding(store, results, suite, tests))]
        finally:
            store.close()
        if not events:
            raise AirflowSkipException("no regression tonight has a last good night to search from")
        context["outlet_events"][Asset(name=self.asset_name)].extra = {"findings": events}
        self.log.info("%d regression(s) for the culprit finder: %s", len(events), json.dumps(events, indent=1))
        return {"findings": len(events)}

    def _finding(self, store: HistoryStore, results: Results, suite: Suite, tests: tuple[str, ...]) -> dict | None:
        """The finding of one suite's regressions, saved as searching unless it is in the store
        already; None (told) when it can't be searched."""
        from include.nightly_ci.history import findings
        from include.nightly_ci.names import run_kind

        cell, name, task_id = suite
        good = findings.suite_before(store, results.dag_id, run_kind(results.run_id), results.logical_date, cell, name)
        bad_image = self._image(results.run_id, task_id)
        if good is None or not good.commit or not good.image or not results.commit or not bad_image:
            self.log.warning("%s/%s: no last good night with a commit and an image, or no image tonight: not searched",
                             cell, name)  # fmt: skip
            return None
        finding = findings.CulpritFinding(
            results.dag_id, results.run_id, results.logical_date, cell, name, tests, good.commit, results.commit
        )
        # Only a new finding: a cleared announce task must not undo what the culprit DAG has
        # advanced or ended since. The event goes again all the same: the search's step runs
        # have fixed run ids (skip_when_already_exists), so nothing runs twice.
        if not findings.save_new(store, finding):
            self.log.info("%s/%s: its finding is in the store already: left as it is", cell, name)
        return {
            "dag_id": results.dag_id,
            "nightly_run_id": results.run_id,
            "night": results.logical_date,
            "cell": cell,
            "suite": name,
            "task_id": task_id,
            "tests": list(tests),
            "good": {"run_id": good.run_id, "commit": good.commit, "image": good.image},
            "bad": {"run_id": results.run_id, "commit": results.commit, "image": bad_image},
        }

    def _image(self, run_id: str, task_id: str) -> str | None:
        """The image the suite ran in tonight, by digest, from its task record."""
        from include.nightly_ci.records import TaskRecord

        path = self.store.run_folder(run_id) / self.record_files[task_id]
        try:
            image = TaskRecord.from_json(json.loads(path.read_text())).image
        except (OSError, ValueError, TypeError):  # missing, cut short, another schema
            return None
        return image if image and "@sha256:" in image else None
