"""The local setup's services live apart from the command that started them: Ctrl-C on
`make demo` or `make test` (SIGINT to the terminal's whole process group) stops the
command, not the engine, the registries or the stand-in Slack; `make down` stops exactly
those, by their pid files, and nothing else.

A setup of its own: a new state folder (the base images' rootfs tarballs linked from the
main one, so no debootstrap), the main venv, ports of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.services import ROOT, STATE, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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


@pytest.fixture
def setup(provisioned):
    """A second setup: its state folder, environment and ports; removed afterwards."""
    state = Path(tempfile.mkdtemp(prefix="nci-life-", dir="/tmp"))  # short: the engine's sockets live here
    for tarball in STATE.glob("rootfs-bookworm-*.v*.tar.gz"):
        os.link(tarball, state / tarball.name)
    ports = {"ECR": free_port(), "ACR": free_port(), "SLACK": free_port()}
    env = {
        **os.environ,
        "NIGHTLY_CI_STATE": str(state),
        "NIGHTLY_CI_VENV": os.environ.get("VENV", str(STATE / "venv")),
        **{f"NIGHTLY_CI_{name}_PORT": str(port) for name, port in ports.items()},
    }
    try:
        yield state, env, ports
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], env=env, capture_output=True, timeout=120)
        subprocess.run(["umount", "-R", "-l", str(state / "engine")], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def test_ctrl_c_stops_the_command_not_the_services_and_make_down_stops_them(setup):
    state, env, ports = setup
    # `make test` in a terminal: provisioning, then the tests, all in one process group.
    command = subprocess.Popen(
        ["bash", "-c", f"bash {ROOT}/scripts/provision.sh && exec sleep 600"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    slack = f"http://127.0.0.1:{ports['SLACK']}/health"
    try:
        wait_for(lambda: answers(slack) or command.poll() is not None, 300, "provisioning of the second setup")
        assert command.poll() is None, command.communicate()[0]
    finally:
        os.killpg(command.pid, signal.SIGINT)  # Ctrl-C
        output = command.communicate(timeout=60)[0]
    assert command.returncode != 0, output  # the command stopped

    sock = state / "engine" / "docker.sock"
    time.sleep(2)  # a service that got the SIGINT would be gone by now
    assert engine_answers(sock), output
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
