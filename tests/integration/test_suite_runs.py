"""What happens to a suite when things around it fail, on the local engine: a worker that
dies (H7), Airflow's task timeout firing (M2), the engine dropping the connection
(M7), test code reaching for the network (M12), and the Kubernetes pod's script (M3)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import docker
import pytest

from include.nightly_ci.errors import EngineUnavailable
from include.nightly_ci.names import LABEL_CELL, LABEL_DAG, LABEL_DEADLINE, LABEL_RUN_ID, LABEL_SUITE
from include.nightly_ci.plan import pytest_command
from include.nightly_ci.suites.run import ERROR, TIMEOUT, SuiteRun, reap_expired, run_in_docker
from tests.services import ENGINE, ROOT, build_sample, wait_for

pytestmark = pytest.mark.integration
RESULTS = "/workspace/test-results"
JUNIT = f"{RESULTS}/pytest_test_report.xml"
# The last whole line pytest prints before the hang (the hanging test's name has no newline yet).
BEFORE_HANG = "test_image_arch_matches_machine PASSED"
DAG = "nightly_ci_suite_runs_test"  # this file's containers carry it; nothing else does
HANGS = textwrap.dedent(
    """
    import time

    import pytest


    @pytest.mark.integration
    def test_hangs():
        print("about to hang", flush=True)
        time.sleep(3600)
    """
)


@pytest.fixture(scope="module")
def engine(provisioned):
    client = docker.APIClient(base_url=ENGINE, timeout=600)
    yield client
    for c in client.containers(all=True, filters={"label": f"{LABEL_DAG}={DAG}"}):
        client.remove_container(c["Id"], force=True)


@pytest.fixture(scope="module")
def hanging_image(engine) -> str:
    """The sample image plus a test that hangs after printing a line."""
    base = build_sample("amd64")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (
            ("Dockerfile", f"FROM {base}\nCOPY test_hangs.py /workspace/tests/unit/\n"),
            ("test_hangs.py", HANGS),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    out = list(
        engine.build(
            fileobj=context,
            custom_context=True,
            tag="nightly-ci-test/hangs:latest",
            rm=True,
            forcerm=True,
            decode=True,
        )
    )
    return next(c["aux"]["ID"] for c in out if "aux" in c)


def labels(suite: str) -> dict[str, str]:
    return {LABEL_DAG: DAG, LABEL_CELL: "vllm_amd64", LABEL_SUITE: suite, LABEL_RUN_ID: "manual__test"}


def ours(engine, suite: str) -> list[dict]:
    return engine.containers(all=True, filters={"label": [f"{LABEL_DAG}={DAG}", f"{LABEL_SUITE}={suite}"]})


def hang(
    client, image: str, suite: str, timeout_sec: float, lines: list[str] | None = None, run: SuiteRun | None = None,
    **kw: Any,
) -> SuiteRun:  # fmt: skip
    """The hanging suite SUITE run on CLIENT's engine (RUN: the SuiteRun to fill, to read it after an error)."""
    run = run or SuiteRun("vllm_amd64", suite, "run", image, "integration")
    return run_in_docker(
        client,
        run,
        command=list(pytest_command("integration", "run", RESULTS)),
        workdir="/workspace",
        junit_path=JUNIT,
        timeout_sec=timeout_sec,
        gpus=0,
        cpus=1,
        memory=None,
        network_mode="none",
        labels=labels(suite),
        sink=(lines if lines is not None else []).append,
        **kw,
    )


# ---------------------------------------------------------------- H7


WORKER = """
import sys
import docker
from tests.integration.test_suite_runs import hang
hang(docker.APIClient(base_url=sys.argv[1], timeout=600), sys.argv[2], "worker_died", float(sys.argv[3]))
"""


def test_a_suite_whose_worker_died_stops_by_itself_and_the_reaper_removes_it(engine, hanging_image):
    """H7: the worker is SIGKILLed mid-suite; its container ends at the suite's timeout
    anyway (its own `timeout`), and the reaper removes it once its deadline has passed."""
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, ENGINE, hanging_image, "6"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: any(c["State"] == "running" for c in ours(engine, "worker_died")), 60, "the suite's container")
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    [container] = ours(engine, "worker_died")
    deadline = datetime.fromisoformat(container["Labels"][LABEL_DEADLINE])
    assert deadline.tzinfo is not None and deadline > datetime.now(UTC)
    # Nobody waits for it any more: it stops by itself at its 6 s timeout.
    wait_for(lambda: engine.inspect_container(container["Id"])["State"]["Status"] == "exited", 40, "a self-stop")
    state = engine.inspect_container(container["Id"])["State"]
    assert state["ExitCode"] == 124  # coreutils timeout: the suite's own deadline fired
    assert "::test_hangs" in engine.logs(container["Id"]).decode()

    # A container of another project, and one of ours still within its deadline: left alone.
    other = engine.create_container(hanging_image, ["true"], labels={LABEL_SUITE: "x", LABEL_DEADLINE: "2000-01-01"})
    fresh = engine.create_container(
        hanging_image,
        ["true"],
        labels={**labels("fresh"), LABEL_DEADLINE: (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
    )
    try:
        logged: list[str] = []
        assert reap_expired(engine, DAG, logged.append) == []  # its deadline has not passed yet
        removed = reap_expired(engine, DAG, logged.append, now=deadline + timedelta(seconds=1))
        assert removed == [container["Id"]]
        assert ours(engine, "worker_died") == []
        assert any(container["Id"][:12] in line and "worker_died" in line for line in logged)
        assert engine.inspect_container(other["Id"]) and engine.inspect_container(fresh["Id"])
    finally:
        engine.remove_container(other["Id"], force=True)
        engine.remove_container(fresh["Id"], force=True)


def test_a_running_container_past_its_deadline_is_killed_and_removed(engine, hanging_image):
    """A container whose own `timeout` could not stop it (an image without coreutils, a
    stuck process): the reaper kills it once its deadline is past."""
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    stuck = engine.create_container(hanging_image, ["sleep", "3600"], labels={**labels("stuck"), LABEL_DEADLINE: past})
    engine.start(stuck)
    assert reap_expired(engine, DAG, lambda _: None) == [stuck["Id"]]
    assert ours(engine, "stuck") == []


# ---------------------------------------------------------------- M7


class ResettingProxy:
    """127.0.0.1:PORT -> the engine's socket: a worker's connection to a remote engine,
    which the test can reset (RST) and close."""

    def __init__(self, target: str):
        self.target = target.removeprefix("unix://")
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def reset(self) -> None:
        """Every open connection ends with a TCP reset, as when an engine restarts."""
        for s in self.conns:
            try:
                if s.family == socket.AF_INET:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)  # wakes the pipe blocked on it (a close alone would not)
                s.close()
            except OSError:
                pass
        self.conns = []

    def close(self) -> None:
        """No engine there any more: refused from now on, and every connection reset."""
        self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone would not)
        self.server.close()
        self.reset()


def test_an_engine_that_goes_away_during_the_wait_is_infra_not_a_timeout(engine, hanging_image):
    proxy = ResettingProxy(ENGINE)
    lines: list[str] = []

    def go_away() -> None:
        wait_for(lambda: any(BEFORE_HANG in line for line in lines), 60, "the suite's first lines")
        proxy.close()

    threading.Thread(target=go_away, daemon=True).start()
    client = docker.APIClient(base_url=proxy.url, timeout=600)
    run = SuiteRun("vllm_amd64", "gone", "run", hanging_image, "integration")
    started = time.monotonic()
    with pytest.raises(EngineUnavailable, match=r"lost the engine .*while waiting for suite gone"):
        hang(client, hanging_image, "gone", 300, lines, run=run)
    assert time.monotonic() - started < 120  # not the suite's 5 minutes
    assert not run.timed_out and run.outcome != TIMEOUT
    assert not any("exceeded its" in line for line in lines)
    from include.nightly_ci.records import classify_failure

    assert classify_failure("test", "EngineUnavailable", "lost the engine", "error") == "infra"
    # The container is still there (nobody could remove it); it carries its own deadline.
    [left] = ours(engine, "gone")
    assert LABEL_DEADLINE in left["Labels"]


def test_a_connection_reset_during_the_wait_is_survived(engine, hanging_image):
    """A reset that the engine survives: the wait reconnects; the suite ends on its own
    timeout with its output, as if nothing had happened."""
    proxy = ResettingProxy(ENGINE)
    lines: list[str] = []

    def reset_once() -> None:
        wait_for(lambda: any(BEFORE_HANG in line for line in lines), 60, "the suite's first lines")
        proxy.reset()

    threading.Thread(target=reset_once, daemon=True).start()
    try:
        run = hang(docker.APIClient(base_url=proxy.url, timeout=600), hanging_image, "reset", 8, lines)
    finally:
        proxy.close()
    assert run.timed_out and run.outcome == TIMEOUT and run.exit_code == 124
    assert "::test_hangs" in run.output
    assert ours(engine, "reset") == []


def test_an_oom_kill_is_an_error_not_a_timeout(engine, hanging_image):
    """Exit 137 before the suite's deadline: the kernel (or someone) killed pytest."""
    run = SuiteRun("vllm_amd64", "oom", "run", hanging_image, "integration")
    run_in_docker(
        engine,
        run,
        command=["bash", "-c", "echo allocating; kill -9 $$"],
        workdir="/workspace",
        junit_path=None,
        timeout_sec=60,
        gpus=0,
        cpus=1,
        memory=None,
        network_mode="none",
        labels=labels("oom"),
        sink=lambda _: None,
    )
    assert run.exit_code == 137 and not run.timed_out and run.outcome == ERROR


# ---------------------------------------------------------------- M12


def test_test_code_gets_no_network_unless_its_pool_says_so(engine, hanging_image, tmp_path):
    from include.nightly_ci.config import load_config
    from include.nightly_ci.plan import build_plan

    def runner_of(runner: str):
        config = tmp_path / "c.yaml"
        config.write_text(f"extends: {ROOT / 'dev' / 'local.yaml'}\npools:\n  gpu-l40-amd64:\n    runner: {runner}\n")
        return build_plan(load_config(config)).cell("vllm", "amd64").tests[0].runner

    closed = runner_of("!replace {backend: docker, gpus: false}")
    opened = runner_of("!replace {backend: docker, gpus: false, network: true, network_mode: host}")
    assert closed.network_mode == "none" and not closed.network
    assert opened.network_mode == "host" and opened.network

    server = socket.create_server(("127.0.0.1", 0))  # on this machine's loopback
    port = server.getsockname()[1]
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('CONNECTED')"

    def connects(network_mode: str | None) -> SuiteRun:
        run = SuiteRun("vllm_amd64", "net", "run", hanging_image, "x")
        return run_in_docker(
            engine,
            run,
            command=["python3", "-c", probe],
            workdir="/workspace",
            junit_path=None,
            timeout_sec=60,
            gpus=0,
            cpus=1,
            memory=None,
            network_mode=network_mode,
            labels=labels("net"),
            sink=lambda _: None,
        )

    try:
        denied = connects(closed.network_mode)
        assert denied.exit_code == 1 and "CONNECTED" not in denied.output
        assert "Network is unreachable" in denied.output or "Connection refused" in denied.output
        allowed = connects(opened.network_mode)  # the control: the same probe does reach it
        assert allowed.exit_code == 0 and "CONNECTED" in allowed.output
    finally:
        server.close()


# ---------------------------------------------------------------- M2


class _TI:
    try_number = 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_the_task_timeout_keeps_the_output_and_the_record(engine, hanging_image, registries, tmp_path, monkeypatch):
    """M2: Airflow's task timeout (AirflowTaskTimeout, a BaseException) fires while the
    suite waits: output.log and record.json are still written, with outcome timeout, and
    the task runner's on_kill does not raise on the container already removed."""
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    from include.nightly_ci.artifacts import ArtifactStore
    from include.nightly_ci.config import load_config
    from include.nightly_ci.plan import Backoff, Registry, build_plan
    from include.nightly_ci.suites.docker import DockerSuiteOperator

    reg = registries("m2")
    auth = {"username": reg.user, "password": reg.password}
    engine.tag(hanging_image, f"{reg.host}/hangs", tag="m2")
    for _ in engine.push(f"{reg.host}/hangs", tag="m2", auth_config=auth, stream=True, decode=True):
        pass
    digest = engine.inspect_image(f"{reg.host}/hangs:m2")["RepoDigests"][0].split("@")[1]
    for key, value in reg.conn_env("m2_registry").items():
        monkeypatch.setenv(key, value)

    plan = build_plan(load_config(ROOT / "dev" / "local.yaml"))
    cell = plan.cell("vllm", "amd64")
    job = next(j for j in cell.tests if j.suite == "integration")
    op = DockerSuiteOperator(
        spec=job.task,
        store=ArtifactStore(str(tmp_path / "artifacts"), None),
        framework="vllm",
        arch="amd64",
        suite=job.suite,
        image=f"{reg.host}/hangs@{digest}",
        command=tuple(pytest_command("integration", "run", RESULTS)),
        mode="run",
        marker="integration",
        workdir="/workspace",
        junit_path=JUNIT,
        timeout_minutes=5,
        gpus=0,
        docker_conn_id=None,
        registry=Registry("m2", "docker", "m2_registry", "hangs"),
        platform="linux/amd64",
        backoff=Backoff(2, 1, 1),
        network_mode="none",
        startup_timeout_seconds=300,
    )
    # The task's execution timeout counts the pull's budget on top of the suite's own time.
    assert op.execution_timeout == timedelta(minutes=5) + timedelta(seconds=300) + timedelta(minutes=10)
    context = {
        "ti": _TI(),
        "dag_run": SimpleNamespace(run_id="manual__m2"),
        "params": {"frameworks": ["vllm"], "arches": ["amd64"]},
    }
    with pytest.raises(AirflowTaskTimeout):  # as the task runner does it (task_runner._execute_task)
        try:
            with timeout(15):
                op.execute(context)
        except AirflowTaskTimeout:
            op.on_kill()
            raise
    folder = (tmp_path / "artifacts" / job.task.artifact_key("manual__m2", "x")).parent
    kept = {p.name for p in folder.iterdir()} if folder.exists() else set()
    assert {"output.log", "record.json"} <= kept, kept
    assert BEFORE_HANG in (folder / "output.log").read_text()
    record = json.loads((folder / "record.json").read_text())
    assert record["outcome"] == TIMEOUT
    assert engine.containers(all=True, filters={"label": f"{LABEL_RUN_ID}=manual__m2"}) == []


# ---------------------------------------------------------------- M3 (the pod's script, no cluster here)


def run_pod_script(engine, image: str, command: list[str], timeout_sec: int, seen_running: list[str]) -> list[str]:
    """The pod's script in a container as the pod runs it; its log lines (what the
    provider's get_logs streams into the task log). SEEN_RUNNING: the lines the log
    already had while the script was still running."""
    from include.nightly_ci.suites.kubernetes import pod_script

    container = engine.create_container(
        image,
        command=["bash", "-c", pod_script(command, "/workspace", JUNIT, timeout_sec)],
        labels=labels("pod"),
        host_config=engine.create_host_config(network_mode="none"),
    )
    try:
        engine.start(container)

        def printed() -> bool:
            seen_running[:] = engine.logs(container).decode().splitlines()
            return (
                any(BEFORE_HANG in line for line in seen_running)
                or not engine.inspect_container(container)["State"]["Running"]
            )

        wait_for(printed, 60, "the pod's first lines")
        if any(BEFORE_HANG in line for line in seen_running):
            assert engine.inspect_container(container)["State"]["Running"], "streamed only at the end"
        engine.wait(container, timeout=120)
        return engine.logs(container).decode().splitlines()
    finally:
        engine.remove_container(container, force=True)


def test_the_pods_output_streams_as_it_runs_and_its_timeout_is_a_timeout(engine, hanging_image):
    from include.nightly_ci.suites.kubernetes import RESULT_MARKER, fill_from_pod_log

    running: list[str] = []
    lines = run_pod_script(engine, hanging_image, list(pytest_command("integration", "run", RESULTS)), 5, running)
    assert any(BEFORE_HANG in line for line in running)  # in the log while pytest still ran
    run = SuiteRun("vllm_amd64", "integration", "run", "img", "integration")
    assert fill_from_pod_log(lines, run, timeout_sec=5)
    assert run.exit_code == 124 and run.timed_out and run.outcome == TIMEOUT
    assert "::test_hangs" in run.output and RESULT_MARKER not in run.output


def test_a_killed_pytest_in_a_pod_is_an_error_not_a_timeout(engine, hanging_image):
    from include.nightly_ci.suites.kubernetes import fill_from_pod_log

    lines = run_pod_script(engine, hanging_image, ["bash", "-c", "echo allocating; kill -9 $$"], 60, [])
    run = SuiteRun("vllm_amd64", "unit", "run", "img", "unit")
    assert fill_from_pod_log(lines, run, timeout_sec=60)
    assert run.exit_code == 137 and not run.timed_out and run.outcome == ERROR
    assert "allocating" in run.output


def test_a_pod_killed_before_it_reported_keeps_what_it_streamed():
    """A deadline kill, an eviction, a lost node: no result line, the output so far is kept."""
    from include.nightly_ci.suites.kubernetes import fill_from_pod_log

    run = SuiteRun("vllm_amd64", "unit", "run", "img", "unit")
    assert not fill_from_pod_log(["collected 3 items", "tests/test_a.py::test_one PASSED"], run, timeout_sec=60)
    assert run.exit_code is None and "test_one PASSED" in run.output
