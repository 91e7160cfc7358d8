"""Old path of the Deadline Alert's callback: Airflow stores the path with every run's
deadline, so runs created before the move still call it here. Remove once no run older
than the move (2026-11-29) has a pending deadline: after the retention period, 7 days.
"""

from include.nightly_ci.report.deadline import notify_overrun  # noqa: F401
