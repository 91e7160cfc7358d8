"""A fix for an Airflow bug that breaks re-running the nightly from the UI, applied by
plugins/nightly_ci_plugin.py in every Airflow process that loads plugins (the api-server,
where Clear is served).

apache/airflow#70368 (Airflow 3.3.0 to 3.3.2; the fix, apache/airflow#70370, is not
released): clearing a task of a run whose DAG has a DAGRUN_QUEUED_AT Deadline Alert, while
that deadline is not yet missed, fails with HTTP 500 ("unsupported type for timedelta
seconds component: dict"). A nightly that failed before its 5 h deadline keeps that
deadline, so Clear on any of its failed tasks broke. `clear_task_instances` reads the
interval column (JSON since 3.3.0) as seconds; this version decodes it the way Airflow's
own run creation does (`decode_deadline_alert`), and is otherwise the same function.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

AFFECTED_VERSIONS = ("3.3.0", "3.3.1", "3.3.2")
_FIXED = "_nightly_ci_fixed"


def recalculate_dagrun_queued_at_deadlines(dagrun: Any, new_queued_at: datetime, session: Any) -> None:
    """Move the run's not-yet-missed queued-at deadlines to NEW_QUEUED_AT + interval."""
    from airflow.models.deadline import Deadline, ReferenceModels
    from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.definitions.deadline import DeadlineAlertFields, SerializedVariableInterval
    from airflow.serialization.enums import DagAttributeTypes, Encoding
    from sqlalchemy import false, select

    results = session.execute(
        select(Deadline, DeadlineAlertModel)
        .join(DeadlineAlertModel, Deadline.deadline_alert_id == DeadlineAlertModel.id)
        .where(
            Deadline.dagrun_id == dagrun.id,
            Deadline.missed == false(),
            DeadlineAlertModel.reference[ReferenceModels.REFERENCE_TYPE_FIELD].as_string()
            == ReferenceModels.DagRunQueuedAtDeadline.__name__,
        )
    ).all()
    for deadline, alert in results:
        decoded = decode_deadline_alert(
            {
                Encoding.TYPE: DagAttributeTypes.DEADLINE_ALERT,
                Encoding.VAR: {
                    DeadlineAlertFields.REFERENCE: alert.reference,
                    DeadlineAlertFields.INTERVAL: alert.interval,
                    DeadlineAlertFields.CALLBACK: alert.callback_def,
                },
            }
        )
        interval = decoded.interval
        if isinstance(interval, SerializedVariableInterval):
            interval = interval.resolve()
        deadline.deadline_time = new_queued_at + interval
    # Like the original: the caller commits.


def apply() -> bool:
    """Install the fix on an affected Airflow; True when it was installed now."""
    from airflow import __version__

    if __version__ not in AFFECTED_VERSIONS:
        return False
    import airflow.models.taskinstance as taskinstance

    current = getattr(taskinstance, "_recalculate_dagrun_queued_at_deadlines", None)
    if current is None or getattr(current, _FIXED, False):
        return False
    setattr(recalculate_dagrun_queued_at_deadlines, _FIXED, True)
    taskinstance._recalculate_dagrun_queued_at_deadlines = recalculate_dagrun_queued_at_deadlines
    return True
