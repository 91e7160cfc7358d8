"""Running one test suite in a container and reading what it left: JUnit counts, the
collected count of a dry run, and the outcome that decides the task's state.

Nothing is shared between the worker and the Docker host: the output comes over the
engine's API (attach, logs) and the JUnit XML with get_archive, before the container is
removed, whatever happened.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from include.nightly_ci.records import JsonRecord

if TYPE_CHECKING:
    from docker import APIClient

LineSink = Callable[[str], None]

# Outcomes. The task succeeds on PASSED and COLLECTED only.
PASSED, FAILED, NO_TESTS, TIMEOUT, ERROR = "passed", "failed", "no_tests", "timeout", "error"
COLLECTED, COLLECTION_ERROR = "collected", "collection_error"
_COLLECTED = re.compile(r"(\d+)(?:/\d+)? tests? collected")


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


def outcome_of(mode: str, exit_code: int | None, timed_out: bool, collected: int) -> str:
    if timed_out:
        return TIMEOUT
    if mode == "collect":
        if exit_code == 0 and collected > 0:
            return COLLECTED
        return NO_TESTS if exit_code in (0, 5) else COLLECTION_ERROR
    if exit_code is None:
        return ERROR
    return {0: PASSED, 1: FAILED, 5: NO_TESTS}.get(exit_code, ERROR)


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


def host_config(client: APIClient, *, gpus: int, cpus: float | None, memory: str | None, network_mode: str | None):
    """GPUs through device_requests (the `--gpus N` of the CLI), a hard CPU limit
    (`--cpus`, not the relative cpu_shares) and a memory limit."""
    from docker.types import DeviceRequest

    return client.create_host_config(
        nano_cpus=int(cpus * 1e9) if cpus else None,
        mem_limit=memory,
        network_mode=network_mode,
        device_requests=[DeviceRequest(count=gpus, capabilities=[["gpu"]])] if gpus else None,
    )


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
) -> SuiteRun:
    """Run COMMAND in RUN.image; fill RUN with the exit code, output and JUnit XML.

    The container is killed at TIMEOUT_SEC and always removed; its output and JUnit are
    read first, so a timeout keeps the partial output.
    """
    import threading

    import requests

    container = client.create_container(
        run.image,
        command=command,
        working_dir=workdir,
        labels=labels,
        # Unbuffered: the output streams live, and survives a kill at the timeout.
        environment={"PYTHONUNBUFFERED": "1"},
        host_config=host_config(client, gpus=gpus, cpus=cpus, memory=memory, network_mode=network_mode),
    )
    on_container(container)
    cid = container["Id"]
    started = time.monotonic()
    run.started = _now()
    follower = None
    try:
        stream = client.attach(cid, stdout=True, stderr=True, stream=True, logs=True)
        follower = threading.Thread(target=_follow, args=(stream, sink), daemon=True)
        follower.start()
        client.start(cid)
        try:
            run.exit_code = client.wait(cid, timeout=int(timeout_sec))["StatusCode"]
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            run.timed_out = True
            sink(f"[nightly-ci] {run.suite} exceeded its {timeout_sec / 60:.0f} min timeout: killing the container")
            client.kill(cid)
            client.wait(cid, timeout=60)
    finally:
        run.duration_sec = round(time.monotonic() - started, 2)
        run.ended = _now()
        try:
            if follower is not None:
                follower.join(timeout=10)
            run.output = client.logs(cid, stdout=True, stderr=True).decode(errors="replace")
            if junit_path:
                run.junit = _read_file(client, cid, junit_path)
        finally:
            client.remove_container(cid, force=True)
    return run
