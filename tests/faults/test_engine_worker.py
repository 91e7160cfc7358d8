"""Faults of the engines and of the worker: a builder or a GPU host's engine that goes down
mid-task, a worker SIGKILLed mid-suite or mid-build (the night then run again), and a test
that hangs past its suite's timeout. Each night ends as the fault decides, each failure in
its class, and nothing of another run is touched."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import pytest

from dev.sample_repo import SAMPLE, make_repo, nightly_history
from include.nightly_ci.names import LABEL_DAG, LABEL_DEADLINE, LABEL_RUN_ID, LABEL_SUITE, build_tag
from include.nightly_ci.suites.run import KILL_AFTER_SEC, MARGIN_SEC
from tests.faults.conftest import FaultStand, Night
from tests.services import ENGINE, ScratchEngine, base_images, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]
CELL = "vllm_amd64"
BUILD_FW, BUILD_RT = f"{CELL}.build_framework", f"{CELL}.build_runtime"
SUITES = ("unit", "integration", "e2e_1gpu", "e2e_2gpu")
UNIT = f"{CELL}.tests.unit"
REPO = "ai-dynamo/dynamo"
RUN_TAG = "nightly-{framework}-{arch}-run-{run_id}"  # the shipped tags.run
# A build step that takes a while, and is found in the process table by its command
# while it runs (BuildKit runs it outside any container the engine lists).
SLOW_STEP = "sleep 23."  # and digits of the test's own: about 23 s
# A unit test of the nightly that never ends; the sample's own unit tests run before it.
HANGS = """import time

import pytest


@pytest.mark.unit
@pytest.mark.nightly
def test_hangs():
    print("about to hang", flush=True)
    time.sleep(3600)
"""
BEFORE_HANG = "test_router.py::test_version_is_set PASSED"  # the last whole line before the hang
ONE_MINUTE = "tests: {suites: {unit: {timeout_minutes: 1}}}\n"  # the schema's minimum
OWN_END_SEC = 60 + KILL_AFTER_SEC + MARGIN_SEC  # a 1-minute suite container's deadline, from its start


def sample_repo(root: Path, name: str, change: Callable[[Path], None]) -> Path:
    """A bare repository of the sample project with CHANGE made to its tree, with the
    stand's kind of history (three nights, then the head)."""
    tree = root / f"{name}-tree"
    shutil.copytree(SAMPLE, tree, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    change(tree)
    make_repo(root / f"{name}.git", nightly_history(3, datetime.now(UTC)), source=tree)
    return root / f"{name}.git"


def add_slow_step(tree: Path, step: str) -> None:
    dockerfile = tree / "container" / "Dockerfile.vllm"
    last = "RUN uname -m > /opt/framework/build-machine\n"
    text = dockerfile.read_text()
    assert text.count(last) == 1, "the sample's framework stage changed: put SLOW_STEP elsewhere"
    dockerfile.write_text(text.replace(last, f"{last}RUN {step}\n"))


def add_hanging_test(tree: Path) -> None:
    (tree / "tests" / "unit" / "test_zz_hangs.py").write_text(HANGS)  # after test_router.py


@dataclass(frozen=True)
class SlowRepo:
    path: Path  # the sample's repository, its framework stage with a slow step
    step: str  # that step's command line, the test's own


@pytest.fixture
def slow_repo(tmp_path_factory) -> SlowRepo:
    """A token of the test's own in the slow step: a step an engine once finished is CACHED
    ever after, and the step of an earlier test (an engine stopped under it lets it run on)
    is not this test's."""
    step = f"{SLOW_STEP}{secrets.randbelow(10**6):06d}"  # the sleep's own command line (sh execs it)
    return SlowRepo(sample_repo(tmp_path_factory.mktemp("slow"), "slow", lambda tree: add_slow_step(tree, step)), step)


@pytest.fixture(scope="module")
def hang_repo(tmp_path_factory) -> Path:
    return sample_repo(tmp_path_factory.mktemp("hang"), "hang", add_hanging_test)


@pytest.fixture
def scratch() -> Iterator[Callable[..., ScratchEngine]]:
    """Factory of Docker engines of the test's own (another host's), stopped after it."""
    started: list[ScratchEngine] = []

    def make(name: str, *images: str) -> ScratchEngine:
        engine = ScratchEngine(name)
        started.append(engine)
        engine.start()
        if images:
            engine.load_from(docker.APIClient(base_url=ENGINE, timeout=300), *images)
        return engine

    yield make
    for engine in started:
        engine.stop()


def slow_step_running(step: str) -> bool:
    """Whether STEP runs on this machine (on whichever engine builds)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and step in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                return True
        except OSError:
            continue  # it ended meanwhile
    return False


def hanging(client: Any, stand: FaultStand) -> dict | None:
    """The stand's unit suite container on CLIENT's engine once it hangs, else None."""
    for c in client.containers(filters={"label": [f"{LABEL_DAG}=nightly_ci", f"{LABEL_SUITE}=unit"]}):
        if c["Image"].startswith(stand.proxies["ecr"].host + "/") and BEFORE_HANG in client.logs(c["Id"]).decode():
            return c
    return None


def record(stand: FaultStand, run_id: str, task_id: str) -> dict[str, Any]:
    """The task's record (state, error, class, when it ended) in the run's folder."""
    cell, _, local = task_id.partition(".")
    body = stand.stored(run_id, f"{cell}/tasks/{local}.json")
    assert body is not None, f"{task_id} left no record"
    return json.loads(body)


def seconds_since(when: datetime | str, iso: str) -> float:
    """Seconds from WHEN to ISO (a record's time, or the engine's: Python reads both)."""
    start = datetime.fromisoformat(when) if isinstance(when, str) else when
    return (datetime.fromisoformat(iso) - start).total_seconds()


def killed_night(stand: FaultStand, logical_date: str) -> dict[str, Any]:
    """The night's DagRun as Airflow holds it after its worker was SIGKILLed."""
    [run] = stand.runs_of(logical_date)
    return run


def kill(worker: Any) -> None:
    """SIGKILL the night's worker and everything it started (its docker CLI, git): a host lost."""
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(30)


# ---------------------------------------------------------------- engines


def test_the_builder_engine_down_mid_build_fails_the_build_as_infra(stand, untouched, slow_repo, scratch):
    """The amd64 builder (an engine of its own) is stopped while build_framework runs its
    slow step: the build is infra, at once (no retries here); everything after it upstream."""
    main = docker.APIClient(base_url=ENGINE)
    builder = scratch("builder", *[i for i in base_images(main) if i.endswith("-amd64")])
    config = stand.config(
        "builder-down",
        "build: {retries: 0}\narches: {amd64: {builder: {conn_id: faults_builder}}}\n",
        source=f"repository: {slow_repo.path}",
    )
    stopped: list[datetime] = []

    def stop_mid_build() -> None:
        wait_for(lambda: slow_step_running(slow_repo.step), 240, "the framework build's slow step")
        stopped.append(datetime.now(UTC))
        builder.stop()

    threading.Thread(target=stop_mid_build, daemon=True).start()
    began = time.monotonic()
    night = stand.run("2026-11-15T08:00:00+00:00", config=config, env=builder.conn_env("faults_builder"))
    ran = time.monotonic() - began
    assert stopped, "the build never reached its slow step:\n" + night.output[-3000:]
    assert night.state == "failed"
    row = night.row(BUILD_FW)
    assert (row["status"], row["failure_class"]) == ("failed", "infra"), row
    assert night.states[BUILD_RT] == "upstream_failed"
    for suite in SUITES:
        tests = night.row(f"{CELL}.tests.{suite}")
        assert (tests["status"], tests["failure_class"]) == ("upstream_failed", "upstream"), tests
    rec = record(stand, night.run_id, BUILD_FW)
    assert rec["error_type"] == "EngineUnavailable", rec
    assert "the builder engine is unreachable or restarted mid-build" in night.output
    took = seconds_since(stopped[0], rec["ended"])
    assert took < 60, took  # the engine's stop, then the CLI's error: not the build's 2 hours
    print(f"builder down: build failed {took:.1f} s after the stop began, night {ran:.0f} s: {rec['error']}")


RUNNER = (
    "pools:\n"
    "  gpu-l40-amd64:\n"
    "    runner: !replace {backend: docker, conn_id: faults_runner, gpus: false, cpus: 2, network_mode: none}\n"
    "tests: {suites: {unit: {timeout_minutes: 3}}}\n"  # if the stop went unnoticed, the suite still ends
)


def test_the_runner_engine_down_mid_suite_fails_its_suites_as_infra(stand, untouched, hang_repo, scratch):
    """The GPU pool's engine (an engine of its own) is stopped while the unit suite hangs
    on it: the suite is infra (the engine, not the code), and so is any suite after it."""
    runner = scratch("runner")
    config = stand.config("runner-down", RUNNER, source=f"repository: {hang_repo}")
    stopped: list[datetime] = []

    def stop_mid_suite() -> None:
        wait_for(lambda: hanging(runner.client(), stand) is not None, 240, "the unit suite's hang")
        stopped.append(datetime.now(UTC))
        runner.stop()

    threading.Thread(target=stop_mid_suite, daemon=True).start()
    began = time.monotonic()
    night = stand.run("2026-11-16T08:00:00+00:00", config=config, env=runner.conn_env("faults_runner"))
    ran = time.monotonic() - began
    assert stopped, "the unit suite never hung on the runner:\n" + night.output[-3000:]
    assert night.state == "failed"
    row = night.row(UNIT)
    assert (row["status"], row["failure_class"]) == ("failed", "infra"), row
    # What the suite printed until then is kept, though the engine can't be read any more.
    output = (stand.stored(night.run_id, f"{CELL}/test-unit/output.log") or b"").decode()
    assert BEFORE_HANG in output and "test_hangs" in output, output
    rec = record(stand, night.run_id, UNIT)
    assert rec["error_type"] == "EngineUnavailable" and "lost the engine" in rec["error"], rec
    assert "while reading what suite unit of vllm_amd64 left" in night.output  # the task log says it
    for suite in SUITES[1:]:  # before the stop they passed; after it the engine is gone
        other = night.row(f"{CELL}.tests.{suite}")
        assert (other["status"], other["failure_class"]) in {("success", None), ("failed", "infra")}, other
    took = seconds_since(stopped[0], rec["ended"])
    assert took < 90, took  # not the suite's 3 minutes
    print(f"runner down: unit failed {took:.1f} s after the stop began, night {ran:.0f} s: {rec['error']}")


# ---------------------------------------------------------------- the worker


@dataclass(frozen=True)
class KilledMidSuite:
    """A night whose worker was SIGKILLed while its unit suite hung, then the night run
    again: what was seen before the run again and after it."""

    logical_date: str
    container: dict[str, Any]  # the orphaned suite container, as listed before the kill
    killed: dict[str, Any]  # the killed DagRun, as Airflow held it then
    rerun: Night
    ran: float  # the run again's seconds
    orphan: dict[str, Any] | None  # the orphan's State after the run again; None: removed


@pytest.fixture(scope="module")
def killed_mid_suite(stand, first_night, hang_repo, tmp_path_factory) -> Iterator[KilledMidSuite]:
    """The night's worker (`airflow dags test`) SIGKILLed while the unit suite hangs (a
    1-minute suite timeout), then the night run again (same logical date). Its run again is
    also the night of a test hanging past its suite's timeout: two tests read it."""
    engine = docker.APIClient(base_url=ENGINE, timeout=120)
    night = "2026-11-17T08:00:00+00:00"
    config = stand.config("killed-mid-suite", ONE_MINUTE, source=f"repository: {hang_repo}")
    worker = stand.launch(night, tmp_path_factory.mktemp("killed") / "killed.log", config=config)
    try:
        wait_for(lambda: hanging(engine, stand) is not None, 240, "the unit suite's hang")
        container = hanging(engine, stand)
    finally:
        kill(worker)
    assert container is not None
    try:
        killed = killed_night(stand, night)
        began = time.monotonic()
        rerun = stand.run(night, config=config)  # Airflow deletes the killed run and starts a new one
        ran = time.monotonic() - began
        try:
            orphan = engine.inspect_container(container["Id"])["State"]
        except docker.errors.NotFound:  # the re-run's reaper got to it: its deadline had passed
            orphan = None
        yield KilledMidSuite(night, container, killed, rerun, ran, orphan)
    finally:
        with contextlib.suppress(docker.errors.NotFound):  # what a later suite's reaper does after its deadline
            engine.remove_container(container["Id"], force=True)


def test_a_worker_killed_mid_suite_leaves_a_container_that_stops_itself_and_the_night_runs_again(
    stand, untouched, killed_mid_suite
):
    """The night's worker is SIGKILLed while the unit suite hangs: its container ends by
    its own 1-minute timeout with nobody waiting for it, and carries the deadline by which
    the reaper removes it. Running the night again (same logical date) replaces the killed
    run with a new one, which leaves a whole table."""
    k = killed_mid_suite
    cid, killed_run = k.container["Id"], k.container["Labels"][LABEL_RUN_ID]
    assert (k.killed["run_id"], k.killed["state"]) == (killed_run, "running")  # nobody is left to end it
    created = datetime.fromtimestamp(k.container["Created"], UTC)
    deadline = datetime.fromisoformat(k.container["Labels"][LABEL_DEADLINE])
    assert abs(deadline - created - timedelta(seconds=OWN_END_SEC)) <= timedelta(seconds=5), (deadline, created)
    if k.orphan is None:  # the re-run's reaper got to it: its deadline had passed
        assert f"removed container {cid[:12]}" in k.rerun.output
    else:
        lived = seconds_since(k.orphan["StartedAt"], k.orphan["FinishedAt"])
        assert k.orphan["Status"] == "exited" and k.orphan["ExitCode"] == 124, k.orphan  # its own `timeout` fired
        assert 59.5 <= lived <= 60 + KILL_AFTER_SEC, lived
        print(f"killed mid-suite: the orphan stopped itself after {lived:.1f} s (exit 124), deadline {deadline}")
    rerun = k.rerun
    assert [r["run_id"] for r in stand.runs_of(k.logical_date)] == [rerun.run_id] != [killed_run]
    assert stand.results(killed_run) is None  # the killed run never got to its table
    assert rerun.state == "failed"
    row = rerun.row(UNIT)
    assert (row["status"], row["failure_class"]) == ("failed", "timeout"), row  # the same hang, again
    assert "suite unit of vllm_amd64: timeout (exit code 124" in rerun.output
    for suite in SUITES[1:]:
        assert rerun.row(f"{CELL}.tests.{suite}")["status"] == "success"
    print(f"killed mid-suite: the night run again in {k.ran:.0f} s, {rerun.state}, unit {row['failure_class']}")


def test_a_worker_killed_mid_build_runs_the_night_again_and_builds_again(
    stand, untouched, slow_repo, tmp_path, scratch
):
    """The night's worker is SIGKILLed while build_framework runs its slow step: the
    engine drops that build, the killed run pushed nothing, and the night run again builds
    and pushes its images and succeeds. The builder is an engine of the test's own: Docker
    20.10's BuildKit can keep records of the cut-short build that later builds trip over
    ("failed to get layer ... layer does not exist"), and the project's engine must not."""
    main = docker.APIClient(base_url=ENGINE)
    builder = scratch("killed-builder", *[i for i in base_images(main) if i.endswith("-amd64")])
    env = builder.conn_env("faults_builder")
    night = "2026-11-18T08:00:00+00:00"
    config = stand.config(
        "killed-mid-build",
        "arches: {amd64: {builder: {conn_id: faults_builder}}}\n",
        source=f"repository: {slow_repo.path}",
    )
    worker = stand.launch(night, tmp_path / "killed.log", config=config, env=env)
    try:
        wait_for(lambda: slow_step_running(slow_repo.step), 240, "the framework build's slow step")
    finally:
        kill(worker)
    killed_at = time.monotonic()
    killed = killed_night(stand, night)
    assert killed["state"] == "running"  # as Airflow holds it: nobody is left to end it
    # Dropped, not finished: the step would run on for about 23 s.
    wait_for(lambda: not slow_step_running(slow_repo.step), 15, "the engine dropping the orphaned build")
    dropped = time.monotonic() - killed_at
    assert stand.stored(killed["run_id"], f"{CELL}/tasks/build_framework.json") is None  # it died mid-build

    began = time.monotonic()
    rerun = stand.run(night, config=config, env=env)
    ran = time.monotonic() - began

    assert rerun.state == "success", rerun.output[-3000:]
    assert record(stand, rerun.run_id, BUILD_FW)["duration_sec"] >= 23  # built again: the cut-short step ran whole
    assert [r["run_id"] for r in stand.runs_of(night)] == [rerun.run_id] != [killed["run_id"]]
    assert rerun.row(BUILD_FW)["status"] == "success" and rerun.row(UNIT)["status"] == "success"
    tags = stand.ecr.tags(REPO)
    for image in ("framework", "runtime"):  # the killed run pushed nothing; the re-run, both images
        assert build_tag(RUN_TAG, "vllm", "amd64", killed["run_id"], image) not in tags
        assert build_tag(RUN_TAG, "vllm", "amd64", rerun.run_id, image) in tags
    print(f"killed mid-build: the engine dropped the build {dropped:.1f} s after the kill; re-run {ran:.0f} s")


# ---------------------------------------------------------------- timeouts


def test_a_test_hanging_past_its_timeout_is_a_timeout_with_its_output_kept(stand, untouched, killed_mid_suite):
    """A unit test sleeps an hour; the suite's timeout is a minute: the suite ends at the
    minute (its `timeout` TERMs pytest), as a timeout, with what it printed until then.
    The night: the run again of killed_mid_suite, whose hang nobody interrupts."""
    night, ran = killed_mid_suite.rerun, killed_mid_suite.ran
    assert night.state == "failed"
    row = night.row(UNIT)
    assert (row["status"], row["failure_class"]) == ("failed", "timeout"), row
    for suite in SUITES[1:]:
        assert night.row(f"{CELL}.tests.{suite}")["status"] == "success"
    output = stand.stored(night.run_id, f"{CELL}/test-unit/output.log")
    assert output is not None and BEFORE_HANG in output.decode() and "test_hangs" in output.decode()
    suite = json.loads(stand.stored(night.run_id, f"{CELL}/test-unit/record.json") or b"{}")
    assert (suite["outcome"], suite["timed_out"], suite["exit_code"]) == ("timeout", True, 124), suite
    assert 60 <= suite["duration_sec"] <= 60 + KILL_AFTER_SEC + 15, suite["duration_sec"]
    assert "suite unit of vllm_amd64: timeout (exit code 124" in night.output
    print(f"hang: the unit suite ended after {suite['duration_sec']} s as a timeout; night {ran:.0f} s")
