"""What the scheduler will do with each DAG of the config once it starts (`make up`).

A DAG is created paused only once, when it first enters the metadata database: a nightly
someone unpaused there (in the UI of an earlier `make up`) stays unpaused, and the next
scheduler queues its latest night the moment it starts. This reads the database and says
so, one line a DAG: the decision in `outlook` (plain data in, a sentence out), the reading
in `read_states`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from include.nightly_ci.plan import Plan
from include.nightly_ci.plan.culprit import culprit_dag_id

# How a DAG is scheduled: by its cron, or by an asset's events.
TIME: Final = "time"
ASSET: Final = "asset"
Schedule = Literal["time", "asset"]


@dataclass(frozen=True)
class DagState:
    """One DAG of the config as the metadata database holds it (is_paused None: no row yet)."""

    dag_id: str
    schedule: Schedule
    is_paused: bool | None
    next_dagrun: datetime | None = None  # the logical date of its next scheduled run
    next_dagrun_create_after: datetime | None = None  # from then on the scheduler queues that run
    nightly: bool = False  # the nightly: its runs are nights
    catchup: bool = False
    created_paused: bool = True  # [core] dags_are_paused_at_creation


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def how_long(seconds: float) -> str:
    hours, minutes = divmod(int(seconds) // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def outlook(state: DagState, now: datetime) -> str:
    """What the scheduler does with the DAG from NOW on, in one line that starts with its id."""
    if state.is_paused is None:
        if state.created_paused:
            return f"{state.dag_id}: not in the database yet: it starts paused (new DAGs are created paused)"
        what = "it runs on the nightly's regressions" if state.schedule == ASSET else "its latest run is queued at once"
        return (
            f"{state.dag_id}: not in the database yet: it starts UNPAUSED ([core] dags_are_paused_at_creation"
            f" is off): once the dag-processor has read it, {what}"
        )
    if state.is_paused:
        return f"{state.dag_id}: paused: nothing runs until you unpause it; {_unpausing(state)}"
    stop = f"to stop it: `airflow dags pause {state.dag_id}`, or the UI's toggle"
    return f"{state.dag_id}: UNPAUSED: {_unpaused(state, now)}; {stop}"


def _unpausing(state: DagState) -> str:
    """What unpausing a paused DAG starts."""
    if state.schedule == ASSET:
        return "unpaused, it runs when the nightly announces regressions"
    if not state.nightly:
        return "unpausing queues its latest run at once, then one at each time of its schedule"
    if not state.catchup:
        return "unpausing queues its latest night at once (catchup off), then one a night"
    since = when(state.next_dagrun) if state.next_dagrun else "its start date"
    return f"unpausing queues every night since {since} at once (catchup on), then one a night"


def _unpaused(state: DagState, now: datetime) -> str:
    """What the scheduler does with an unpaused DAG: the scheduler queues a time-scheduled
    DAG's next run once now is past next_dagrun_create_after (none while that is unset)."""
    if state.schedule == ASSET:
        return "it runs when the nightly announces regressions"
    due, night = state.next_dagrun_create_after, state.next_dagrun
    if due is None or night is None:
        return "the database holds no next run for it: the scheduler queues none until the dag-processor sets one"
    if due <= now:
        missed = ", then every later night up to now (catchup on)" if state.catchup else ""
        return f"the scheduler queues its run for {when(night)} at once{missed}"
    later = f"at {when(due)} (in {how_long((due - now).total_seconds())})"
    if night == due:  # a cron trigger's run is for the moment it is queued
        return f"the scheduler queues its next run {later}"
    return f"the scheduler queues its next run, for {when(night)}, {later}"  # a data interval's: for its start


def dags_of(plan: Plan) -> list[tuple[str, Schedule]]:
    """The DAGs dags/ makes of the config, with how each is scheduled: the nightly, its
    retention and the culprit finder (the nightly's regressions start it; it exists, to run
    by hand, even when the config does not announce regressions to it)."""
    return [(plan.dag_id, TIME), (plan.retention_dag_id, TIME), (culprit_dag_id(plan), ASSET)]


def read_states(plan: Plan) -> list[DagState]:
    """The config's DAGs as the metadata database (this AIRFLOW_HOME's) holds them."""
    from airflow.configuration import conf
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dags = dags_of(plan)
    columns = (DagModel.dag_id, DagModel.is_paused, DagModel.next_dagrun, DagModel.next_dagrun_create_after)
    with create_session() as session:
        rows = {r[0]: r[1:] for r in session.execute(select(*columns).where(DagModel.dag_id.in_([d for d, _ in dags])))}
    created_paused = conf.getboolean("core", "dags_are_paused_at_creation")
    states = []
    for dag_id, schedule in dags:
        is_paused, next_dagrun, create_after = rows.get(dag_id, (None, None, None))
        nightly = dag_id == plan.dag_id  # the retention DAG and the culprit finder never catch up
        catchup = nightly and plan.catchup
        states.append(
            DagState(dag_id, schedule, is_paused, next_dagrun, create_after, nightly, catchup, created_paused)
        )
    return states


def paused_lines(plan: Plan, now: datetime) -> Iterator[str]:
    for state in read_states(plan):
        yield outlook(state, now)
