"""The local setup's own commands: pools from the config, builder engines from
connections, and provisioning refusing clearly when it can't install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.services import ENGINE, ROOT, airflow_env

pytestmark = [pytest.mark.integration]


def test_pools_are_created_from_the_config_and_updated_on_rerun(airflow_home, tmp_path):
    def pools_cmd(config):
        return subprocess.run(
            [sys.executable, "-m", "include.nightly_ci", "pools", str(config)],
            env=airflow_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    shipped = ROOT / "include" / "config" / "nightly_ci.yaml"
    out = pools_cmd(shipped)
    assert "cpu-amd-m5-4xlarge" in out and "gpu-l40-amd64" in out
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "airflow", "pools", "list", "-o", "json"],
            env=airflow_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    slots = {p["pool"]: int(p["slots"]) for p in listed}
    assert slots["cpu-amd-m5-4xlarge"] == 4 and slots["cpu-arm-r8g-4xlarge"] == 4 and slots["gpu-l40-amd64"] == 8
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(f"extends: {shipped}\npools:\n  gpu-l40-amd64: {{slots: 16}}\n")
    assert "gpu-l40-amd64: slots 8 -> 16" in pools_cmd(bigger)
    assert "(unchanged)" in pools_cmd(bigger)


def test_builder_engine_from_a_connection(monkeypatch, provisioned):
    from include.nightly_ci.images.engine import engine_client

    monkeypatch.setenv("AIRFLOW_CONN_BUILDER_ARM64", json.dumps({"conn_type": "docker", "host": ENGINE}))
    assert engine_client("builder_arm64").ping()
    assert engine_client(None).ping()  # the local engine by default


def test_an_unreachable_builder_fails_clearly(monkeypatch):
    from include.nightly_ci.images.engine import engine_client

    monkeypatch.setenv(
        "AIRFLOW_CONN_BUILDER_GONE", json.dumps({"conn_type": "docker", "host": "unix:///nonexistent.sock"})
    )
    from include.nightly_ci.errors import EngineUnavailable

    # The error names the engine and the connection it came from, and counts as infrastructure.
    with pytest.raises(
        EngineUnavailable, match=r"unix:///nonexistent.sock \(connection 'builder_gone'\) can't be reached"
    ):
        engine_client("builder_gone")


def scripts_copy(folder) -> Path:
    """provision.sh and env.sh copied to FOLDER (readable by anyone): the clone may sit in a
    folder other users cannot read (mktemp -d is 0700)."""
    (folder / "scripts").mkdir(parents=True)
    for name in ("provision.sh", "env.sh"):
        shutil.copy(ROOT / "scripts" / name, folder / "scripts" / name)
    folder.chmod(0o755)
    return folder / "scripts" / "provision.sh"


def bare_env(state) -> dict[str, str]:
    """A machine where docker.io is not installed yet: nothing from the sbin folders on PATH
    (dockerd, debootstrap, update-binfmts live there) and no docker CLI."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(state),
        "NIGHTLY_CI_STATE": str(state),
        "NIGHTLY_CI_DOCKER_CLI": "/nonexistent/docker",
    }


def test_the_preflight_without_docker_says_what_is_missing_and_does_not_recurse(tmp_path):
    """The first `make demo` on a machine without Docker once died in a bash segfault: the
    docker() wrapper fell back to a bare `docker`, which was itself."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(scripts_copy(tmp_path / "copy")), "--check"],
        env=bare_env(tmp_path / "state"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # not 139, a segfault
    assert time.monotonic() - started < 30
    assert "missing packages:" in proc.stdout and "docker.io" in proc.stdout and "debootstrap" in proc.stdout
    assert "is not running" in proc.stdout  # the setup's engine


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_provision_without_docker_and_without_root_says_what_to_install():
    # Outside pytest's own temporary folders (0700, like a clone made with mktemp -d):
    # another user must be able to reach the copy.
    folder = Path(tempfile.mkdtemp(prefix="nightly-ci-nobody-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        state = folder / "state"
        state.mkdir()
        shutil.chown(state, "nobody")
        provision = scripts_copy(folder / "copy")
        proc = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", str(provision)],
            env=bare_env(state),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(folder)
    assert proc.returncode == 1, proc.stderr
    assert "ERROR: missing:" in proc.stderr and "install them as root: apt-get install -y" in proc.stderr
    assert "docker.io" in proc.stderr


def test_the_tests_run_from_a_clone_other_users_cannot_read(tmp_path):
    """Issue 14.1: cloned into a folder made by `mktemp -d` (0700), the test above ran the
    clone's own provision.sh as `nobody`, which got 'Permission denied' (exit 126). From
    such a clone (the tracked files as they are now), that test passes."""
    private = Path(tempfile.mkdtemp(prefix="nightly-ci-private-"))  # 0700, like mktemp -d
    try:
        clone = private / "clone"
        tracked = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\0")
        for name in filter(None, tracked):
            if (ROOT / name).is_file():
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, clone / name)
        assert private.stat().st_mode & 0o777 == 0o700
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/integration/test_local_setup.py",
             "-k", "test_provision_without_docker_and_without_root_says_what_to_install"],
            cwd=clone, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        shutil.rmtree(private)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


def provision(**ports: int) -> subprocess.CompletedProcess:
    env = {**os.environ, **{f"NIGHTLY_CI_{name.upper()}_PORT": str(port) for name, port in ports.items()}}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "provision.sh")], env=env, capture_output=True, text=True, timeout=300
    )


def test_a_port_held_by_another_setups_server_is_not_taken_for_ours(registries, tmp_path):
    """A registry that answers the registry API but not with this setup's credentials, or a
    stand-in Slack that writes another log, is someone else's: provisioning says so and
    leaves it (and its own servers) running."""
    import threading

    from dev.fake_slack import FakeSlack
    from tests.services import free_port

    theirs = registries("theirs")
    proc = provision(ecr=theirs.port)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"127.0.0.1:{theirs.port} is a registry that refuses this setup's credentials" in proc.stderr
    assert theirs.proc is not None and theirs.proc.poll() is None

    slack = FakeSlack(free_port(), tmp_path / "their-messages.jsonl")
    threading.Thread(target=slack.serve_forever, daemon=True).start()
    try:
        proc = provision(slack=slack.server_port)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "is not this setup's stand-in Slack" in proc.stderr
    finally:
        slack.shutdown()
    assert provision().returncode == 0  # this setup's own servers, untouched, on their ports


def image_files(client, name: str, paths: tuple[str, ...]) -> dict[str, str]:
    """PATHS as the image's layers hold them (docker save, either layout), not as a
    container would show them (the engine mounts its own /etc/hostname there)."""
    import io
    import tarfile

    found = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(client.get_image(name)))) as saved:
        for member in saved.getmembers():
            if not member.isfile() or not (member.name.endswith("layer.tar") or member.name.startswith("blobs/")):
                continue
            try:
                layer = tarfile.open(fileobj=saved.extractfile(member))  # noqa: SIM115 - closed below
            except tarfile.ReadError:  # a config or manifest blob
                continue
            with layer:
                names = {m.name.removeprefix("./"): m for m in layer.getmembers()}
                for path in paths:
                    if path in names and names[path].isfile():
                        found[path] = layer.extractfile(names[path]).read().decode()  # type: ignore[union-attr]
    return found


def test_the_base_images_carry_no_name_or_resolver_of_this_machine(provisioned):
    """debootstrap copies the host's /etc/hostname and /etc/resolv.conf (L9): every image
    built on the base would carry them to the registries."""
    import docker

    from tests.services import base_images

    client = docker.APIClient(base_url=ENGINE, timeout=300)
    names = base_images(client)
    wanted = {f"nightly-ci-{kind}:bookworm-{arch}" for kind in ("base", "runtime") for arch in ("amd64", "arm64")}
    assert wanted <= set(names), names
    checked = set()
    for name in names:
        image = client.inspect_image(name)
        assert image["Config"]["Labels"].get("dev.nightly-ci.rootfs") == "2", name
        if image["Id"] not in checked:
            checked.add(image["Id"])
            files = image_files(client, name, ("etc/hostname", "etc/resolv.conf"))
            assert files == {"etc/hostname": "localhost\n", "etc/resolv.conf": ""}, (name, files)
