"""`make demo`: one whole nightly of the local config against the sample project.

Its tasks run in parallel as a scheduler would run them (`DAG.test(use_executor=True)`
with the LocalExecutor, and an api-server on loopback for the workers' Execution API),
then the demo prints what the night did: how every task ended, by stage; what the
registries hold; the results table; the message the stand-in Slack received; and its
wall time beside the critical path of its task work. Airflow's own output goes to
.local/demo-run.log, each task's log under .local/airflow/logs.

    python -m dev.demo [--logical-date ISO] [--conf JSON] [--parallelism N]

Run it through `make demo` (scripts/demo.sh), which provisions first and sets the local
environment (scripts/local_env.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from dev.graph import critical_path

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
RUN_LOG = LOCAL / "demo-run.log"


def say(out: TextIO, text: str) -> None:
    out.write(f"[demo] {text}\n")
    out.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def executor_env(parallelism: int, api_port: int) -> dict[str, str]:
    """What the executor's workers and the api-server must agree on. Set before Airflow
    is imported: it reads its configuration once."""
    secret = os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET") or secrets.token_urlsafe(32)
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        # A task's supervisor notices its task ended only at its next heartbeat poll
        # (default 5 s): 1 s gives the slot back to the next task sooner.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    }


def fix_local_executor_end() -> None:
    """LocalExecutor.end() of Airflow 3.3.2 sends a stop only to the workers alive when it
    looks, then joins every worker: a worker that exits in between leaves another one
    waiting for a stop that never comes, and the demo hangs after its run (about 1 run in
    10 here; apache/airflow#45329). This version stops every worker, and kills one that
    does not stop within 30 s."""
    from airflow.executors.local_executor import LocalExecutor

    def end(self: Any) -> None:
        for _ in self.workers:
            self.activity_queue.put(None)
        for proc in self.workers.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
            proc.close()
        self._read_results()
        self.activity_queue.close()
        self.result_queue.close()

    LocalExecutor.end = end  # type: ignore[method-assign]


def preload() -> None:
    """What the tasks import when they run, imported once here: the executor's workers
    are forked from this process, so no task pays for these imports again."""
    import include.nightly_ci.worker_preload  # noqa: F401


@contextlib.contextmanager
def api_server(port: int, log: Path) -> Iterator[None]:
    """An api-server on 127.0.0.1:PORT for the workers' Execution API, stopped after."""
    import requests

    with log.open("ab") as out:
        proc = subprocess.Popen(
            # Only the Execution API the workers talk to: it starts in half the time of the whole UI.
            [sys.executable, "-m", "airflow", "api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops it in order
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the api-server exited with {proc.returncode}; see {log}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/execution/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"the api-server did not answer on 127.0.0.1:{port} within 90 s; see {log}")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[TextIO]:
    """Send this process's stdout and stderr (Airflow's logging) to LOG; yield the
    terminal's stdout, for the demo's own lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with log.open("ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        terminal.close()


def prepare(config: str, out: TextIO) -> Any:
    """A valid config, the sample repository, a migrated database and the pools; the plan."""
    from dev.sample_repo import ensure_repo
    from include.nightly_ci.cli.pools import sync_pools
    from include.nightly_ci.plan import load_plan

    plan = load_plan(config)
    say(out, f"config {config}: {len(plan.cells)} cells, {sum(1 for _ in plan.tasks())} tasks")
    say(out, ensure_repo(LOCAL / "sample-project.git"))
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, check=False
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}{migrate.stderr[-2000:]}")
    for line in sync_pools(plan):
        say(out, line)
    return plan


class Progress(threading.Thread):
    """Every few seconds, how many of the run's tasks ended, on the terminal."""

    def __init__(self, out: TextIO, dag_id: str, total: int, every: float = 5.0):
        super().__init__(daemon=True)
        self.out, self.dag_id, self.total, self.every = out, dag_id, total, every
        self.done = threading.Event()

    def run(self) -> None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import func, select

        last = ""
        while not self.done.wait(self.every):
            with contextlib.suppress(Exception), create_session() as session:
                rows = session.execute(
                    select(TaskInstance.state, func.count())
                    .where(TaskInstance.dag_id == self.dag_id, TaskInstance.run_id == self._run_id(session))
                    .group_by(TaskInstance.state)
                ).all()
                states = {str(getattr(s, "value", s)): n for s, n in rows}
                ended = sum(n for s, n in states.items() if s in ("success", "failed", "skipped", "upstream_failed"))
                line = f"{ended}/{self.total} tasks ended, {states.get('running', 0)} running"
                if line != last:
                    say(self.out, line)
                    last = line

    def _run_id(self, session: Any) -> str | None:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        return session.scalar(
            select(DagRun.run_id).where(DagRun.dag_id == self.dag_id).order_by(DagRun.id.desc()).limit(1)
        )


def run_night(plan: Any, logical_date: datetime, conf: dict[str, Any] | None, out: TextIO) -> Any:
    """One DagRun of the nightly, its tasks through the LocalExecutor; the finished DagRun."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(ROOT / "dags"))
    if plan.dag_id not in bag.dags:
        raise RuntimeError(f"the DAG did not load: {bag.import_errors}")
    fix_local_executor_end()
    preload()
    progress = Progress(out, plan.dag_id, sum(1 for _ in plan.tasks()))
    progress.start()
    try:
        return bag.dags[plan.dag_id].test(logical_date=logical_date, run_conf=conf, use_executor=True)
    finally:
        progress.done.set()


def task_instances(dag_id: str, run_id: str) -> list[Any]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        session.expunge_all()
        return list(tis)


def print_states(plan: Any, tis: list[Any], out: TextIO) -> None:
    """How every task ended, by the plan's stages; anything not successful by name."""
    from include.nightly_ci.names import RERUN, STAGES

    by_stage: dict[str, Counter[str]] = {stage: Counter() for stage in STAGES}
    for ti in tis:
        by_stage[plan.task(ti.task_id).stage][str(ti.state)] += 1
    for stage, states in by_stage.items():
        counted = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        say(
            out,
            f"{stage:6} tasks: {counted}"
            + (" (a rerun with nothing to rerun is skipped)" if stage == RERUN and states["skipped"] else ""),
        )
    for ti in tis:
        spec = plan.task(ti.task_id)
        if str(ti.state) == "skipped" and spec.stage == RERUN:
            continue  # a flake rerun with nothing to rerun: Airflow skips a mapped task of no items
        if str(ti.state) != "success":
            say(out, f"  {ti.task_id} ({spec.display_name}): {ti.state}")


def task_work(tis: list[Any]) -> dict[str, float]:
    """Each task's run time, start to end of its task instance, as Airflow recorded it."""
    return {ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in tis if ti.start_date and ti.end_date}


def print_results(plan: Any, run_id: str, out: TextIO) -> bool:
    from include.nightly_ci.cli.inventory import print_inventory

    run_dir = plan.store.run_folder(run_id)
    say(out, f"artifacts (build logs and metrics, test output, JUnit, records): {run_dir}")
    say(out, "what the registries hold now:")
    with contextlib.redirect_stdout(out):
        inventory_ok = print_inventory(plan) == 0
    results = run_dir / "results.md"
    if not results.exists():
        say(out, "no results summary was written")
        return False
    say(out, f"{results}:")
    out.write(results.read_text())
    return inventory_ok


def print_slack(out: TextIO) -> bool:
    state = Path(os.environ.get("STATE", "/var/lib/nightly-ci"))
    messages = state / "slack" / "messages.jsonl"
    posted = [json.loads(line) for line in messages.read_text().splitlines()] if messages.exists() else []
    ours = [m for m in posted if "/T0NIGHTLY/" in m.get("path", "") and isinstance(m.get("body"), dict)]
    if not ours:
        say(out, f"the stand-in Slack received nothing ({messages})")
        return False
    say(out, "the last message the (stand-in) Slack received:")
    out.write(ours[-1]["body"]["text"] + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logical-date", help="ISO date-time of the night (default: now)")
    parser.add_argument("--conf", help='the run\'s Params as JSON, e.g. \'{"frameworks": ["vllm"]}\'')
    # More tasks at once than about 3 per core only adds contention (measured on 2 cores:
    # 4 and 6 take 26 s, 8 and 12 take 27-29 s).
    parser.add_argument(
        "--parallelism", type=int, default=3 * (os.cpu_count() or 2), help="tasks at once (the LocalExecutor's workers)"
    )
    args = parser.parse_args(argv)
    config = os.environ.get("NIGHTLY_CI_CONFIG") or str(ROOT / "dev" / "local.yaml")
    logical_date = datetime.fromisoformat(args.logical_date) if args.logical_date else datetime.now(UTC)
    # The demo is a night: like a scheduled run, it moves the moving tags (a manual run,
    # which `DAG.test` makes, does so only when asked: plan.publishes).
    conf = {"publish": True, **(json.loads(args.conf) if args.conf else {})}
    LOCAL.mkdir(exist_ok=True)
    RUN_LOG.write_text("")
    # A plain `kill` unwinds like Ctrl-C, so the api-server and the workers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    port = free_port()
    os.environ.update(executor_env(args.parallelism, port))
    started = time.monotonic()
    with output_to(RUN_LOG) as out:
        plan = prepare(config, out)
        say(out, f"nightly {plan.dag_id} for {logical_date.isoformat()}, {args.parallelism} tasks at once")
        say(out, f"Airflow's output: {RUN_LOG}")
        with api_server(port, LOCAL / "demo-api-server.log"):
            ran = time.monotonic()
            dag_run = run_night(plan, logical_date, conf, out)
            wall = time.monotonic() - ran
        tis = task_instances(plan.dag_id, dag_run.run_id)
        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(str(ROOT / "dags")).dags[plan.dag_id]
        state = str(getattr(dag_run.state, "value", dag_run.state))
        say(out, f"run_id={dag_run.run_id} state={state}")
        print_states(plan, tis, out)
        ok = print_results(plan, dag_run.run_id, out)
        ok = print_slack(out) and ok
        upstream = {task_id: set(task.upstream_task_ids) for task_id, task in dag.task_dict.items()}
        path_seconds, path = critical_path(upstream, task_work(tis))
        say(out, f"wall time of the run: {wall:.1f} s ({time.monotonic() - started:.1f} s with the preparation)")
        say(out, f"critical path of its task work: {path_seconds:.1f} s: " + " -> ".join(path))
        say(out, "(each task's work is its run time as Airflow recorded it, start to end)")
    return 0 if state == "success" and ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
