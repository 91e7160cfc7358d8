"""The local setup's services live apart from the command that started them: Ctrl-C on
`make demo` or `make test` (SIGINT to the terminal's whole process group) stops the
command within seconds at every step of provisioning, not the engine, the registries or
the stand-in Slack; a later run resumes where it stopped; `make down` stops exactly the
services, by their pid files, and nothing else.

A setup of its own: a new state folder (the base images' rootfs tarballs linked from the
main one, so no debootstrap), the main venv, ports of its own."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.services import ROOT, STATE, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STOPS_WITHIN_SEC = 10  # "a few seconds", on a busy 2-core machine
# htpasswd as a command that handles Ctrl-C itself and ends normally (exit 0), as many do:
# bash takes a SIGINT that arrives while it waits for such a command as handled, and goes
# on. Short commands that happen to end as the SIGINT arrives do the same, by chance.
FAKE_HTPASSWD = """#!/bin/sh
sleep 30 >/dev/null 2>&1 &
trap 'kill $!; exec /usr/bin/htpasswd "$@"' INT
echo "[fake htpasswd] waiting" >&2
wait
exec /usr/bin/htpasswd "$@"
"""
# Where provisioning a new state is interrupted, in its order: the line it prints, then the
# command of that step to catch running (a regex over the command lines of the provisioning's
# session), SIGINT the moment it runs: the engine's wait, `docker import`, set_image_arch.py,
# the fake htpasswd. Not a delay after the line: a step that ends sooner than the delay on
# an idle machine took the SIGINT in the next step, which then never printed its line again.
STEPS = [
    ("starting the setup's own dockerd", r"^sleep 1$"),
    ("importing nightly-ci-base:bookworm-amd64", r"docker import .* nightly-ci-base:bookworm-amd64-importing"),
    ("importing nightly-ci-base:bookworm-arm64", r"set_image_arch\.py nightly-ci-base:bookworm-arm64-importing"),
    ("importing nightly-ci-runtime:bookworm-amd64", r"docker import .* nightly-ci-runtime:bookworm-amd64-importing"),
    ("importing nightly-ci-runtime:bookworm-arm64", r"set_image_arch\.py nightly-ci-runtime:bookworm-arm64-importing"),
    ("[fake htpasswd] waiting", r"^sleep 30$"),
]
# The last line provisioning prints: past it, a step's line will not come.
PROVISIONED = "stand-in Slack: "


def answers(url: str, **kwargs) -> bool:
    try:
        return requests.get(url, timeout=2, **kwargs).status_code < 500
    except requests.ConnectionError:
        return False


def engine_answers(sock: Path) -> bool:
    proc = subprocess.run(
        ["curl", "-fsS", "--unix-socket", str(sock), "http://engine/_ping"], capture_output=True, text=True
    )
    return proc.stdout == "OK"


@dataclass(frozen=True)
class Interrupted:
    """Provisioning of a new state, Ctrl-C'd at one step."""

    step: str
    seconds: float | None  # from the SIGINT to the command's end; None: still running
    returncode: int | None
    output: str


@dataclass(frozen=True)
class Setup:
    state: Path
    env: dict[str, str]
    ports: dict[str, int]
    interrupted: tuple[Interrupted, ...]


def session_commands(sid: int) -> list[str]:
    """The command lines of the processes of session SID."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
            if int(fields[3]) == sid:
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def as_in_a_terminal() -> None:
    """In the child, before it runs: Ctrl-C's signal at its default, as a terminal's shell
    starts a command. A `make test` started in the background (`make test &`, a CI job's
    shell) passes on SIGINT ignored, and a command that starts with it ignored can't even
    trap it: the test's Ctrl-C would then be lost, not the product's."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_until(env: dict[str, str], line: str, command_re: str | None, after: float = 0.0) -> Interrupted:
    """`make test` in a terminal (provisioning, then the tests, one process group), Ctrl-C'd
    once provisioning printed LINE and then runs a command matching COMMAND_RE (None: AFTER
    seconds after LINE); how long it took to stop. Provisioning that gets past its last line
    first fails the test at once."""
    command = subprocess.Popen(
        ["bash", "-c", f"bash {ROOT}/scripts/provision.sh && exec sleep 600"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=as_in_a_terminal,
    )  # fmt: skip
    assert command.stdout is not None
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(command.stdout or ()), daemon=True)
    reader.start()
    pattern = re.compile(command_re) if command_re else None
    deadline = time.monotonic() + 300
    try:
        while not any(line in out for out in seen):
            if any(PROVISIONED in out for out in seen) or command.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"provisioning never printed {line!r}:\n{''.join(seen)}")
            time.sleep(0.005)
        if pattern is None:
            time.sleep(after)
        while pattern is not None and not any(pattern.search(c) for c in session_commands(command.pid)):
            if command.poll() is not None or time.monotonic() > deadline or any(PROVISIONED in out for out in seen):
                raise AssertionError(f"provisioning never ran /{command_re}/ after {line!r}:\n{''.join(seen)}")
            time.sleep(0.002)
    finally:
        os.killpg(command.pid, signal.SIGINT)  # Ctrl-C
        sent = time.monotonic()
    try:
        command.wait(timeout=60)
        took: float | None = time.monotonic() - sent
    except subprocess.TimeoutExpired:
        took = None
        os.killpg(command.pid, signal.SIGKILL)
        command.wait()
    reader.join(10)
    return Interrupted(line, took, command.returncode, "".join(seen))


@pytest.fixture(scope="module")
def setup(provisioned):
    """A second setup, Ctrl-C'd at every step of its first provisioning (each run again
    resumes it); its state folder, environment and ports. Removed afterwards."""
    state = Path(tempfile.mkdtemp(prefix="nci-life-", dir="/tmp"))  # short: the engine's sockets live here
    for tarball in STATE.glob("rootfs-bookworm-*.v*.tar.gz"):
        os.link(tarball, state / tarball.name)
    fake = state / "fake-bin"
    fake.mkdir()
    (fake / "htpasswd").write_text(FAKE_HTPASSWD)
    (fake / "htpasswd").chmod(0o755)
    ports = {"ECR": free_port(), "ACR": free_port(), "SLACK": free_port()}
    env = {
        **os.environ,
        "NIGHTLY_CI_STATE": str(state),
        "NIGHTLY_CI_VENV": os.environ.get("VENV", str(STATE / "venv")),
        **{f"NIGHTLY_CI_{name}_PORT": str(port) for name, port in ports.items()},
    }
    try:
        faked = {**env, "PATH": f"{fake}:{env['PATH']}"}
        interrupted = []
        for line, command in STEPS:
            done = run_until(faked, line, command)
            # A step that went on after its Ctrl-C ran the next ones too: say so here, not as
            # the next step's line that never came.
            assert done.seconds is not None, f"Ctrl-C at {line!r}: still running after 60 s:\n{done.output}"
            interrupted.append(done)
        yield Setup(state, env, ports, tuple(interrupted))
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], env=env, capture_output=True, timeout=120)
        subprocess.run(["umount", "-R", "-l", str(state / "engine")], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def test_ctrl_c_stops_provisioning_within_seconds_at_every_step_and_a_rerun_resumes(setup):
    """Each step ends at once, whether its command dies of the SIGINT or (the fake
    htpasswd) ends normally; nothing after it runs; the next run picks up from there."""
    for done, (line, _) in zip(setup.interrupted, STEPS, strict=True):
        assert done.seconds is not None and done.seconds <= STOPS_WITHIN_SEC, (line, done.seconds, done.output[-3000:])
        assert done.returncode != 0, done.output[-3000:]  # the command stopped: no tests after a Ctrl-C'd setup
        later = done.output.split(line, 1)[1]
        assert "registry acr: started" not in later and "stand-in Slack: started" not in later, later
        print(f"Ctrl-C at {line!r}: stopped after {done.seconds:.2f} s, exit {done.returncode}")
    # What a Ctrl-C'd step left half made is not trusted: the run again finishes the setup,
    # each base image of its arch.
    final = subprocess.run(["bash", str(ROOT / "scripts" / "provision.sh")], env=setup.env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert final.returncode == 0, final.stdout + final.stderr
    env = {**setup.env, "DOCKER_HOST": f"unix://{setup.state}/engine/docker.sock"}
    for kind in ("base", "runtime"):
        for arch in ("amd64", "arm64"):
            inspect = subprocess.run(["/usr/bin/docker", "image", "inspect", "-f", "{{.Architecture}}",
                                      f"nightly-ci-{kind}:bookworm-{arch}"], env=env, capture_output=True, text=True)  # fmt: skip
            assert inspect.stdout.strip() == arch, (kind, arch, inspect.stdout, inspect.stderr)


def test_ctrl_c_stops_the_command_not_the_services_and_make_down_stops_them(setup):
    state, env, ports = setup.state, setup.env, setup.ports
    slack = f"http://127.0.0.1:{ports['SLACK']}/health"
    # `make test` in a terminal, Ctrl-C'd once its tests run (provisioning is done).
    done = run_until(env, PROVISIONED, None, after=1.0)
    assert done.seconds is not None and done.seconds <= STOPS_WITHIN_SEC, done
    assert done.returncode != 0, done.output  # the command stopped
    assert answers(slack), done.output

    sock = state / "engine" / "docker.sock"
    time.sleep(2)  # a service that got the SIGINT would be gone by now
    assert engine_answers(sock), done.output
    assert answers(f"http://127.0.0.1:{ports['ECR']}/v2/") and answers(f"http://127.0.0.1:{ports['ACR']}/v2/")
    assert requests.get(slack, timeout=2).text == f"nightly-ci stand-in slack {state}/slack/messages.jsonl"
    pidfiles = ["engine/docker.pid", "registries/ecr/registry.pid", "registries/acr/registry.pid", "slack/server.pid"]
    pids = {name: int((state / name).read_text()) for name in pidfiles}

    down = subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.count(": stopped") == 4, down.stdout
    assert not engine_answers(sock)
    for port in ports.values():
        assert not answers(f"http://127.0.0.1:{port}/")
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    # The main setup's services were not touched.
    assert engine_answers(STATE / "engine" / "docker.sock")
    again = subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "not started by the setup" in again.stdout
