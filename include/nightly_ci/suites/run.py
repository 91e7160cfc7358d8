"""Running one test suite in a container and reading what it left: JUnit counts, the
collected count of a dry run, and the outcome that decides the task's state.

Nothing is shared between the worker and the Docker host: the output comes over the
engine's API (attach, logs) and the JUnit XML with get_archive, before the container is
removed, whatever happened.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from include.nightly_ci.errors import EngineConfigError, EngineUnavailable
from include.nightly_ci.names import LABEL_DAG, LABEL_DEADLINE, LABEL_SUITE, PytestExit
from include.nightly_ci.records import JsonRecord

if TYPE_CHECKING:
    from docker import APIClient

LineSink = Callable[[str], None]

# Outcomes. The task succeeds on PASSED and COLLECTED only.
PASSED, FAILED, NO_TESTS, TIMEOUT, ERROR = "passed", "failed", "no_tests", "timeout", "error"
COLLECTED, COLLECTION_ERROR = "collected", "collection_error"
_COLLECTED = re.compile(r"(\d+)(?:/\d+)? tests? collected")

# The suite's own deadline, inside its container or pod (coreutils `timeout`, in every
# Debian or Ubuntu image): TERM at the suite's timeout, KILL this much later.
KILL_AFTER_SEC = 30
# How long past that the worker still waits before it kills the container itself, and
# the reaper before it removes it: the engine's own latency, not the suite's.
MARGIN_SEC = 60
# Reconnections to an engine that dropped the wait (an engine restart, a network blip).
WAIT_RECONNECTS = 3


def junit_counts(xml_text: str) -> dict[str, int]:
    """tests / passed / failed / skipped / errors summed over every <testsuite>."""
    import xml.etree.ElementTree as ET  # at run time only: the DAG file imports this module

    root = ET.fromstring(xml_text)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {"tests": 0, "failed": 0, "skipped": 0, "errors": 0}
    for s in suites:
        counts["tests"] += int(s.get("tests", 0))
        counts["failed"] += int(s.get("failures", 0))
        counts["skipped"] += int(s.get("skipped", 0))
        counts["errors"] += int(s.get("errors", 0))
    counts["passed"] = counts["tests"] - counts["failed"] - counts["skipped"] - counts["errors"]
    return counts


def collected_count(output: str) -> int:
    """How many tests `pytest --collect-only` selected, from its closing line."""
    found = _COLLECTED.findall(output)
    return int(found[-1]) if found else 0


def suite_command(command: list[str], timeout_sec: float) -> list[str]:
    """COMMAND under its own deadline: it ends even when no worker waits for it any more."""
    return ["timeout", "--signal=TERM", f"--kill-after={KILL_AFTER_SEC}", f"{int(timeout_sec)}s", *command]


def deadline_fired(exit_code: int | None, elapsed_sec: float, timeout_sec: float) -> bool:
    """Whether `timeout` ended the suite: 124 (TERM at the deadline), or 137 (its KILL,
    KILL_AFTER_SEC later) once the deadline had passed. A 137 before it is an OOM kill
    or some other SIGKILL: an error, not a timeout (M3)."""
    return exit_code == 124 or (exit_code == 137 and elapsed_sec >= timeout_sec)


def outcome_of(mode: str, exit_code: int | None, timed_out: bool, collected: int) -> str:
    if timed_out:
        return TIMEOUT
    if mode == "collect":
        if exit_code == PytestExit.OK and collected > 0:
            return COLLECTED
        return NO_TESTS if exit_code in (PytestExit.OK, PytestExit.NO_TESTS_COLLECTED) else COLLECTION_ERROR
    if exit_code is None:
        return ERROR
    ran: dict[int, str] = {
        PytestExit.OK: PASSED,
        PytestExit.TESTS_FAILED: FAILED,
        PytestExit.NO_TESTS_COLLECTED: NO_TESTS,
    }
    return ran.get(exit_code, ERROR)


@dataclass
class SuiteRun:
    """One suite while it runs; result() is what the artifact store and XCom keep."""

    cell: str
    suite: str
    mode: str
    image: str
    marker: str
    exit_code: int | None = None
    timed_out: bool = False
    output: str = field(default="", repr=False)
    junit: str | None = field(default=None, repr=False)
    started: str = ""
    ended: str = ""
    duration_sec: float = 0.0
    error: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        if self.mode == "collect":
            return {"collected": collected_count(self.output)}
        if self.junit:
            from xml.etree.ElementTree import ParseError

            try:
                return junit_counts(self.junit)
            except ParseError:
                pass  # a run killed mid-write; the output is still kept
        return {}

    @property
    def outcome(self) -> str:
        if self.error is not None:
            return ERROR
        return outcome_of(self.mode, self.exit_code, self.timed_out, self.counts.get("collected", 0))

    def result(self, artifacts: dict[str, str]) -> SuiteResult:
        data = asdict(self)
        data.pop("output")
        data.pop("junit")
        return SuiteResult(**data, outcome=self.outcome, counts=self.counts, artifacts=artifacts)


@dataclass(frozen=True)
class SuiteResult(JsonRecord):
    """What a suite left: its record.json in the artifact store, and the task's XCom."""

    cell: str
    suite: str
    mode: str
    image: str
    marker: str
    exit_code: int | None
    timed_out: bool
    started: str
    ended: str
    duration_sec: float
    error: str | None
    outcome: str
    counts: dict[str, int]
    artifacts: dict[str, str]  # output, junit (when written), record: where each file is


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _read_file(client: APIClient, container: str, path: str) -> str | None:
    import io
    import tarfile

    import docker.errors

    try:
        chunks, _ = client.get_archive(container, path)
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member else None
        return handle.read().decode(errors="replace") if handle else None


def _follow(stream, sink: LineSink) -> None:
    pending = ""
    for chunk in stream:
        pending += chunk.decode(errors="replace")
        while "\n" in pending:
            line, pending = pending.split("\n", 1)
            sink(line)
    if pending:
        sink(pending)


def host_config(
    client: APIClient,
    *,
    gpus: int,
    cpus: float | None,
    memory: str | None,
    network_mode: str | None,
    volumes: Mapping[str, str] | None = None,
):
    """GPUs through device_requests (the `--gpus N` of the CLI), a hard CPU limit
    (`--cpus`, not the relative cpu_shares), a memory limit, and VOLUMES (host folder ->
    folder in the container) mounted read-only. The host is the engine's, which may be
    another machine than the worker's."""
    from docker.types import DeviceRequest, Mount

    # A bind mount, not a `Binds` entry ("host:container:ro"): the engine refuses a host
    # folder that is not there, where Binds would make an empty one and hide the mistake.
    mounts = [Mount(target, host, type="bind", read_only=True) for host, target in (volumes or {}).items()]
    return client.create_host_config(
        nano_cpus=int(cpus * 1e9) if cpus else None,
        mem_limit=memory,
        network_mode=network_mode,
        device_requests=[DeviceRequest(count=gpus, capabilities=[["gpu"]])] if gpus else None,
        mounts=mounts or None,
    )


def reap_expired(client: APIClient, dag_id: str, sink: LineSink, now: datetime | None = None) -> list[str]:
    """Remove DAG_ID's suite containers whose deadline has passed; their ids.

    Left by a worker that died (H7): such a container has stopped itself by its deadline
    (or is stuck, and is killed here). Containers without this DAG's labels are never
    touched. Run on an engine before each suite starts there.
    """
    import docker.errors

    now = now or datetime.now(UTC)
    removed = []
    mine = client.containers(all=True, filters={"label": [f"{LABEL_DAG}={dag_id}", LABEL_DEADLINE, LABEL_SUITE]})
    for c in mine:
        try:
            deadline = datetime.fromisoformat(c["Labels"][LABEL_DEADLINE])
        except ValueError:
            continue  # not a deadline this code wrote
        if deadline.tzinfo is None or deadline > now:
            continue
        try:
            client.remove_container(c["Id"], force=True)
        except docker.errors.NotFound:
            continue  # another worker reaped it first
        sink(
            f"[nightly-ci] removed container {c['Id'][:12]} of suite {c['Labels'][LABEL_SUITE]} "
            f"({c['State']}): its deadline {deadline.isoformat()} has passed and no worker removed it"
        )
        removed.append(c["Id"])
    return removed


def _wait(client: APIClient, cid: str, run: SuiteRun, seconds: float, sink: LineSink) -> int | None:
    """The container's exit code, or None if it still runs after SECONDS.

    A dropped connection is not a timeout (M7): the wait reconnects, and an engine that
    stays unreachable is EngineUnavailable (infra). The container ends by its own
    deadline whatever happens to this wait.
    """
    import requests

    until = time.monotonic() + seconds
    failures = 0
    while (left := until - time.monotonic()) > 0:
        try:
            return int(client.wait(cid, timeout=max(1, int(left)))["StatusCode"])
        except requests.exceptions.ReadTimeout:
            return None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # A reset mid-answer is a ChunkedEncodingError; docker-py reports a read timeout
            # on the wait's body as a ConnectionError: only the clock tells it from a drop.
            if time.monotonic() >= until - 1:
                return None
            failures += 1
            if failures > WAIT_RECONNECTS:
                raise EngineUnavailable(
                    f"lost the engine {client.base_url} while waiting for suite {run.suite} of {run.cell} "
                    f"(container {cid[:12]}, {failures} tries): {exc}; the container stops itself at its "
                    "deadline and the next suite on this engine removes it"
                ) from exc
            sink(f"[nightly-ci] the engine dropped the wait for {run.suite} ({exc}); reconnecting")
            time.sleep(2 * failures)
    return None


def _kill(client: APIClient, cid: str) -> None:
    import docker.errors

    try:
        client.kill(cid)
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: it stopped meanwhile
            raise
    client.wait(cid, timeout=60)


def _collect(
    client: APIClient, cid: str, run: SuiteRun, junit_path: str | None, sink: LineSink, quiet: bool, streamed: list[str]
) -> None:
    """Read the output and JUnit, then remove the container. If the engine can't be read,
    the output is what STREAMED live, and the engine's loss is the error (EngineUnavailable:
    infra, whatever the container's exit code said). QUIET (something already stopped the
    suite): say what failed here and go on, so that the error in flight stays the task's."""
    import requests

    try:
        run.output = client.logs(cid, stdout=True, stderr=True).decode(errors="replace")
        if junit_path:
            run.junit = _read_file(client, cid, junit_path)
    except Exception as exc:
        run.output = run.output or "\n".join(streamed)
        if not quiet and isinstance(exc, requests.exceptions.ConnectionError):
            raise EngineUnavailable(
                f"lost the engine {client.base_url} while reading what suite {run.suite} of {run.cell} left "
                f"(container {cid[:12]}, exit code {run.exit_code}): {exc}; its output is what streamed until then"
            ) from exc
        if not quiet:
            raise
        sink(f"[nightly-ci] could not read the output of container {cid[:12]}: {exc}")
    finally:
        try:
            client.remove_container(cid, force=True)
        except Exception as exc:  # the deadline label lets the reaper remove it later
            sink(f"[nightly-ci] could not remove container {cid[:12]}: {exc}")


def _create(client: APIClient, volumes: Mapping[str, str] | None, **kwargs) -> dict:
    """The container, or EngineConfigError if a host folder of the pool's volumes is not on
    the engine's host: the runner's setup is wrong (infra), not the tests."""
    import docker.errors

    try:
        return client.create_container(**kwargs)
    except docker.errors.APIError as exc:
        text = str(exc)
        missing = [f"{host} (mounted at {target})" for host, target in (volumes or {}).items() if host in text]
        if "does not exist" not in text or not missing:
            raise
        raise EngineConfigError(
            f"the host of engine {client.base_url} has no folder {', '.join(missing)}: create it there, or "
            f"change the test pool's runner.volumes ({exc.explanation or exc})"
        ) from exc


def run_in_docker(
    client: APIClient,
    run: SuiteRun,
    *,
    command: list[str],
    workdir: str,
    junit_path: str | None,
    timeout_sec: float,
    gpus: int,
    cpus: float | None,
    memory: str | None,
    network_mode: str | None,
    labels: dict[str, str],
    sink: LineSink,
    on_container: Callable[[dict], None] = lambda _: None,
    env: Mapping[str, str] | None = None,
    volumes: Mapping[str, str] | None = None,
) -> SuiteRun:
    """Run COMMAND in RUN.image; fill RUN with the exit code, output and JUnit XML.

    The container ends itself at TIMEOUT_SEC (`timeout` inside it), and carries its
    deadline as a label for the reaper: neither depends on this worker living (H7). It is
    always removed; its output and JUnit are read first, so a timeout keeps the partial
    output. ENV: more of the container's environment (which run of the tests this is).
    VOLUMES: folders of the engine's host mounted read-only (host path -> container path).
    """
    import threading

    own_end = timeout_sec + KILL_AFTER_SEC + MARGIN_SEC
    deadline = datetime.now(UTC) + timedelta(seconds=own_end)
    container = _create(
        client,
        volumes,
        image=run.image,
        command=suite_command(command, timeout_sec),
        working_dir=workdir,
        labels={**labels, LABEL_DEADLINE: deadline.isoformat(timespec="seconds")},
        # Unbuffered: the output streams live, and survives a kill at the timeout.
        environment={**(env or {}), "PYTHONUNBUFFERED": "1"},
        host_config=host_config(
            client, gpus=gpus, cpus=cpus, memory=memory, network_mode=network_mode, volumes=volumes
        ),
    )
    on_container(container)
    cid = container["Id"]
    started = time.monotonic()
    run.started = _now()
    follower = None
    streamed: list[str] = []  # the output as it came, for when the engine can't be read after

    def stream_line(line: str) -> None:
        streamed.append(line)
        sink(line)

    def finish(quiet: bool) -> None:
        run.duration_sec = round(time.monotonic() - started, 2)
        run.ended = _now()
        if follower is not None:
            follower.join(timeout=10)
        _collect(client, cid, run, junit_path, sink, quiet, streamed)

    try:
        stream = client.attach(cid, stdout=True, stderr=True, stream=True, logs=True)
        follower = threading.Thread(target=_follow, args=(stream, stream_line), daemon=True)
        follower.start()
        client.start(cid)
        run.exit_code = _wait(client, cid, run, own_end, sink)
        run.timed_out = deadline_fired(run.exit_code, time.monotonic() - started, timeout_sec)
        if run.exit_code is None:  # its own `timeout` did not end it (no coreutils in the image?)
            run.timed_out = True
            sink(f"[nightly-ci] {run.suite} outlived its {timeout_sec / 60:.0f} min timeout: killing the container")
            _kill(client, cid)
    except BaseException:  # Airflow's task timeout is one (M2): keep what the container left
        finish(quiet=True)
        raise
    finish(quiet=False)
    return run
