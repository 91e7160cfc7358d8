"""`make demo` end to end: one whole nightly of the local config, as a user runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest

from include.nightly_ci.names import tag_safe_run_id
from include.nightly_ci.plan import LABEL_REVISION
from include.nightly_ci.registries import RegistryAuth, RegistryClient
from tests.services import DOCKER_SOCK, ROOT, run_id_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = "ai-dynamo/dynamo"
CELLS = [(fw, arch) for fw in ("vllm", "sglang", "trtllm") for arch in ("amd64", "arm64")]


def state_dir() -> Path:
    return Path(
        os.environ.get("NIGHTLY_CI_STATE", "/var/lib/nightly-ci" if os.geteuid() == 0 else "~/.cache/nightly-ci")
    ).expanduser()


def client(name: str, port: int) -> RegistryClient:
    password = (state_dir() / "registries" / name / "password").read_text().strip()
    return RegistryClient(RegistryAuth(name, f"nightly_ci_{name}", f"127.0.0.1:{port}", "ci", password))


@pytest.fixture(scope="module")
def demo():
    env = {k: v for k, v in os.environ.items() if k not in ("AIRFLOW_HOME", "NIGHTLY_CI_CONFIG")}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    run_log = (ROOT / ".local" / "demo-run.log").read_text()
    return proc.stdout, run_id_of(run_log)


def test_demo_ends_by_printing_what_it_pushed_with_digests(demo):
    out, _ = demo
    assert "30 images in 2 registries, 0 missing" in out
    assert "state=success" in out
    assert "[demo] build  tasks: 12 success" in out and "[demo] push   tasks: 18 success" in out
    assert "[demo] test   tasks: 24 success" in out
    assert out.count("sha256:") >= 30


def test_ecr_holds_framework_and_both_runtime_tags_for_all_six_cells(demo):
    _, run_id = demo
    ecr = client("ecr", 5101)
    tags = set(ecr.tags(REPO))
    head = subprocess.run(
        ["git", "--git-dir", str(ROOT / ".local" / "sample-project.git"), "rev-parse", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for fw, arch in CELLS:
        run_tag = f"nightly-{fw}-{arch}-run-{tag_safe_run_id(run_id)}"
        assert {f"main-{fw}-framework-{arch}", f"nightly-{fw}-{arch}", run_tag} <= tags
        image = ecr.image(REPO, run_tag)
        assert image.labels[LABEL_REVISION] == head
        assert image.digest == ecr.image(REPO, f"nightly-{fw}-{arch}").digest


def test_acr_holds_runtime_images_only(demo):
    _, run_id = demo
    tags = client("acr", 5102).tags(REPO)
    assert not [t for t in tags if "framework" in t]
    for fw, arch in CELLS:
        assert {f"nightly-{fw}-{arch}", f"nightly-{fw}-{arch}-run-{tag_safe_run_id(run_id)}"} <= set(tags)


def test_arm64_images_are_arm64_and_run_as_aarch64(demo):
    ecr = client("ecr", 5101)
    engine = docker.DockerClient(base_url=f"unix://{DOCKER_SOCK}")
    for fw, arch in CELLS:
        assert ecr.image(REPO, f"nightly-{fw}-{arch}").architecture == arch
        assert ecr.image(REPO, f"main-{fw}-framework-{arch}").architecture == arch
        if arch == "arm64":
            out = engine.containers.run(
                f"127.0.0.1:5101/{REPO}:nightly-{fw}-{arch}",
                ["uname", "-m"],
                platform="linux/arm64",
                network_mode="none",
                remove=True,
            )
            assert out.decode().strip() == "aarch64"


def build_info(tag: str) -> str:
    engine = docker.DockerClient(base_url=f"unix://{DOCKER_SOCK}")
    out = engine.containers.run(
        f"127.0.0.1:5101/{REPO}:{tag}",
        ["cat", "/opt/framework/build-info"],
        platform="linux/arm64",
        network_mode="none",
        remove=True,
    )
    return out.decode()


def test_arm64_overrides_reached_the_build(demo):
    info = build_info("nightly-vllm-arm64")
    assert "cuda_version=129" in info and "torch_backend=cu129" in info
    assert "cuda_version=128" in build_info("nightly-sglang-arm64")  # sglang keeps the defaults
