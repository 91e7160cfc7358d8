"""The fix for apache/airflow#70368 is installed on the affected Airflow versions only,
once, and decodes the JSON interval Airflow 3.3 stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import airflow
import airflow.models.taskinstance as taskinstance
import pytest

from include.nightly_ci.ui import airflow_fixes


def test_the_fix_is_installed_once_on_the_pinned_airflow(monkeypatch):
    assert airflow.__version__ in airflow_fixes.AFFECTED_VERSIONS  # revisit the fix when Airflow moves
    original = taskinstance._recalculate_dagrun_queued_at_deadlines
    monkeypatch.setattr(taskinstance, "_recalculate_dagrun_queued_at_deadlines", original)
    if getattr(original, "_nightly_ci_fixed", False):  # the plugin already ran in this process
        assert airflow_fixes.apply() is False
        return
    assert airflow_fixes.apply() is True
    assert taskinstance._recalculate_dagrun_queued_at_deadlines is airflow_fixes.recalculate_dagrun_queued_at_deadlines
    assert airflow_fixes.apply() is False


def test_an_unaffected_airflow_is_left_alone(monkeypatch):
    monkeypatch.setattr(airflow, "__version__", "3.3.3")
    before = taskinstance._recalculate_dagrun_queued_at_deadlines
    assert airflow_fixes.apply() is False
    assert taskinstance._recalculate_dagrun_queued_at_deadlines is before


class _Session:
    """Answers the one query with rows as Airflow 3.3 stores them."""

    def __init__(self, rows):
        self.rows = rows

    def execute(self, _query):
        return SimpleNamespace(all=lambda: self.rows)


def test_the_json_interval_is_decoded_and_the_deadline_moved():
    from airflow.sdk.serde import serialize

    deadline = SimpleNamespace(deadline_time=None)
    alert = SimpleNamespace(
        reference={"reference_type": "DagRunQueuedAtDeadline"},
        interval=serialize(timedelta(hours=5)),  # {"__classname__": "datetime.timedelta", ...}
        callback_def={
            "__classname__": "airflow.sdk.definitions.callback.AsyncCallback",
            "__version__": 0,
            "__data__": {"path": "include.nightly_ci.deadline.notify_overrun", "kwargs": {}},
        },
    )
    assert isinstance(alert.interval, dict)
    cleared_at = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    airflow_fixes.recalculate_dagrun_queued_at_deadlines(
        SimpleNamespace(id=1), cleared_at, _Session([(deadline, alert)])
    )
    assert deadline.deadline_time == cleared_at + timedelta(hours=5)
    # What Airflow 3.3.2's own version does with the same row: the bug.
    original = taskinstance._recalculate_dagrun_queued_at_deadlines
    if not getattr(original, "_nightly_ci_fixed", False):
        with pytest.raises(TypeError, match="unsupported type for timedelta seconds component: dict"):
            fake_run, fake_session = cast(Any, SimpleNamespace(id=1)), cast(Any, _Session([(deadline, alert)]))
            original(fake_run, cleared_at, fake_session)
