"""`python -m include.nightly_ci history migrate|import`: the history store's schema, and
nights brought in from the results already in the artifact store (nights from before the
store existed, or recorded while it was down)."""

from __future__ import annotations

from collections.abc import Callable

from include.nightly_ci.errors import HistoryConfigError
from include.nightly_ci.history.records import NightRecord
from include.nightly_ci.history.store import HistoryStore
from include.nightly_ci.names import run_kind
from include.nightly_ci.plan import Plan
from include.nightly_ci.report.reading import RunFolder, completed_runs
from include.nightly_ci.report.results import Results, cells_of, previous_results
from include.nightly_ci.report.triage import Night, with_store


def open_store(plan: Plan, conn_id: str | None) -> HistoryStore:
    conn_id = conn_id or plan.history.conn_id
    if not conn_id:
        raise HistoryConfigError("no history store: history.conn_id is null and no --conn-id was given")
    store = HistoryStore.from_connection(conn_id)
    store.migrate()
    return store


def import_runs(plan: Plan, store: HistoryStore, *, every: bool, out: Callable[[str], None]) -> int:
    """Bring in each run of PLAN's DAG whose results.json the store lacks (EVERY: all of
    them again), oldest night first so that each night's rules see the nights before it."""
    runs, warnings = completed_runs(plan.store.root())
    for warning in warnings:
        out(f"warning: {warning}")
    ours = sorted((r for r in runs if r.dag_id == plan.dag_id), key=lambda r: r.logical_date)
    recorded = set() if every else store.recorded_runs(plan.dag_id)
    imported = 0
    for results in ours:
        if results.run_id in recorded:
            continue
        triage = with_store(_night(plan, results), store, _before(ours, results), out)
        imported += 1
        out(f"imported {results.run_id} ({results.logical_date}): {len(triage.verdicts)} failed cases told apart")
    out(f"{imported} run(s) imported, {len(ours) - imported} already recorded, from {plan.store.base}")
    return imported


def _night(plan: Plan, results: Results) -> Night:
    folder = RunFolder(plan, plan.store.run_folder(results.run_id))
    records, _ = folder.records()
    cases, durations, _ = folder.cases()
    reruns, _ = folder.reruns()
    record = NightRecord(
        plan.dag_id, results.run_id, results.logical_date, run_kind(results.run_id), results.commit, results.run_url
    )
    # The JUnit reports where they are still kept; results.json's cases where they expired.
    return Night(plan, record, results.rows, records, cases or results.cases, durations, reruns)


def _before(runs: list[Results], results: Results) -> Results | None:
    return previous_results(
        runs,
        dag_id=results.dag_id,
        run_id=results.run_id,
        logical_date=results.logical_date,
        cells=cells_of(results.rows),
    )
