"""The history store at scale: a generated history of NIGHTS nights x CELLS cells x CASES
test cases a cell (4 suites each), written night by night through the store's own write,
then the triage page's reads timed on it.

Reports: the write of one night's rows (the summary's write, and the summary's whole
history step: rules, write, quarantine), the matrix of the last 14 and last 90 nights,
one test's history, one suite's history and one night's lists, each the median of 5,
both as the store's reads and as the triage page's whole HTML (reads and rendering,
in process: without the HTTP round trip and the login check).
Targets: each read and page under 1 s, the night's write under 5 s.

    python benchmarks/history.py [--backend sqlite|postgres] [--nights 90] [--cells 8] [--cases 5000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from include.nightly_ci.history import views  # noqa: E402
from include.nightly_ci.history.night_views import night_lists  # noqa: E402
from include.nightly_ci.history.records import (  # noqa: E402
    FLAKY,
    REGRESSION,
    CaseRecord,
    NightRecord,
    SuiteRecord,
)
from include.nightly_ci.history.store import HistoryStore  # noqa: E402
from include.nightly_ci.ui import triage  # noqa: E402

DAG = "nightly_ci"
SUITES = ("unit", "integration", "e2e_1gpu", "e2e_2gpu")
FIRST = datetime(2026, 8, 1, 8, tzinfo=UTC)


def night_rows(n: int, cells: list[str], cases: int, rng: random.Random) -> tuple[NightRecord, list, list]:
    when = (FIRST + timedelta(days=n)).isoformat()
    record = NightRecord(DAG, f"scheduled__{when}", when, "nightly", f"{n:040x}", f"http://ui/runs/{n}", True)
    per_suite = cases // len(SUITES)
    suites, rows = [], []
    for cell in cells:
        for suite in SUITES:
            task_id = f"{cell}.tests.{suite}"
            suites.append(SuiteRecord(cell, suite, task_id, "success", "passed", None, f"reg/x@sha256:{n:064x}",
                                      "gpu-1", 1, per_suite, 600.0))  # fmt: skip
            for i in range(per_suite):
                test = f"tests.{suite}.test_mod{i // 50}::test_case_{i}"
                roll = rng.random()
                if roll < 0.002:
                    rows.append(CaseRecord(cell, suite, test, "failed", 1.0, REGRESSION, ("failed",) * 3))
                elif roll < 0.003:
                    rows.append(CaseRecord(cell, suite, test, "failed", 1.0, FLAKY, ("failed", "passed")))
                else:
                    rows.append(CaseRecord(cell, suite, test, "skipped" if roll > 0.98 else "passed", 0.5))
    return record, suites, rows


def timed(func: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    took, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        took.append(time.perf_counter() - started)
    return statistics.median(took), result


def summary_step(store: HistoryStore, record: NightRecord, suites: list, rows: list) -> None:
    """The summary's history step on a night: the rules' reads, the write, the quarantine."""
    failed = [(r.cell, r.suite, r.test_id) for r in rows if r.outcome == "failed"]
    store.previous_outcomes(DAG, "nightly", record.night, failed)
    store.flaky_nights(DAG, "nightly", record.night, [t for _, _, t in failed], 13)
    store.clean_nights(DAG, "nightly", record.night, ["tests.unit.test_mod1::*"], 6)
    store.write_night(record, suites, rows)
    store.quarantine(DAG, include_released=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--nights", type=int, default=90)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--cases", type=int, default=5000)
    args = parser.parse_args()
    server = None
    if args.backend == "postgres":
        from tests.services import Postgres

        server = Postgres()
        server.start()
        url = server.createdb("history_bench")
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='nightly-ci-history-bench-')}/history.db"
    store = HistoryStore(url)
    # The triage page finds the store through the config's history connection.
    os.environ.pop("NIGHTLY_CI_CONFIG", None)  # the shipped config: history.conn_id nightly_ci_history
    os.environ["AIRFLOW_CONN_NIGHTLY_CI_HISTORY"] = json.dumps(
        {"conn_type": "sqlite", "host": url.removeprefix("sqlite:///")}
        if server is None
        else {"conn_type": "postgres", "host": "127.0.0.1", "port": server.port, "login": "airflow",
              "password": server.password, "schema": "history_bench"}
    )  # fmt: skip
    try:
        return measure(store, args)
    finally:
        store.close()
        if server:
            server.stop()


def measure(store: HistoryStore, args: argparse.Namespace) -> int:
    store.migrate()
    rng = random.Random(7)
    cells = [f"fw{i}_{'amd64' if i % 2 == 0 else 'arm64'}" for i in range(args.cells)]
    began = time.perf_counter()
    writes = []
    for n in range(args.nights - 1):
        record, suites, rows = night_rows(n, cells, args.cases, rng)
        started = time.perf_counter()
        store.write_night(record, suites, rows)
        writes.append(time.perf_counter() - started)
        if n % 10 == 0:
            print(f"  night {n + 1}/{args.nights}: {len(rows)} cases written in {writes[-1]:.2f} s", flush=True)
    record, suites, rows = night_rows(args.nights - 1, cells, args.cases, rng)
    started = time.perf_counter()
    summary_step(store, record, suites, rows)
    step = time.perf_counter() - started
    generated = time.perf_counter() - began
    again = dataclasses.replace(record, commit="f" * 40)
    write, _ = timed(lambda: store.write_night(again, suites, rows), repeat=3)
    test_id = "tests.unit.test_mod3::test_case_170"
    figures = {
        "write of one night's rows (s)": write,
        "summary's history step (reads, write, quarantine) (s)": step,
        "matrix, last 14 nights (s)": timed(lambda: views.matrix(store, DAG, "nightly", 14))[0],
        "matrix, last 90 nights (s)": timed(lambda: views.matrix(store, DAG, "nightly", 90))[0],
        "one test's history, 90 nights (s)": timed(lambda: views.test_history(store, DAG, "nightly", test_id, 90))[0],
        "one suite's history, 90 nights (s)": timed(
            lambda: views.suite_history(store, DAG, "nightly", cells[0], "unit", 90)
        )[0],
        "one night's lists (s)": timed(lambda: night_lists(store, DAG, "nightly", None))[0],
        "page: matrix, last 14 nights (s)": timed(lambda: triage._matrix(14, "nightly"))[0],
        "page: matrix, last 90 nights (s)": timed(lambda: triage._matrix(90, "nightly"))[0],
        "page: one test's history, 90 nights (s)": timed(lambda: triage._test(test_id, 90, "nightly"))[0],
        "page: one night's lists (s)": timed(lambda: triage._night(None, "nightly"))[0],
    }
    backend = store.engine.dialect.name
    total = args.nights * args.cells * (args.cases // len(SUITES)) * len(SUITES)
    print(f"\n{backend}: {args.nights} nights x {args.cells} cells x {args.cases} cases = {total:,} case rows,")
    print(f"generated in {generated:.0f} s (median write {statistics.median(writes):.2f} s a night)")
    for name, seconds in figures.items():
        print(f"  {name:<58} {seconds:8.3f}")
    reads_ok = all(v < 1 for k, v in figures.items() if "write" not in k and "step" not in k)
    ok = reads_ok and write < 5 and step < 5
    print("PASS" if ok else "FAIL: a read took 1 s or more, or a write 5 s or more")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
