"""The retention DAG for real: run tags expire from an authenticated registry, moving
tags and what they point at stay; old artifacts go, recent ones stay."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import docker
import pytest

from include.nightly_ci.images.engine import push
from include.nightly_ci.images.registries import RegistryAuth, RegistryClient
from tests.services import ENGINE, airflow_env, present, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = "ai-dynamo/dynamo"
NOW = datetime.now(UTC)


def image_of_night(engine, night: datetime) -> str:
    dockerfile = f"FROM nightly-ci-base:bookworm-amd64\nLABEL dev.nightly-ci.logical-date={night.isoformat()}\n"
    out = list(engine.build(fileobj=io.BytesIO(dockerfile.encode()), rm=True, forcerm=True, decode=True))
    return next(c["aux"]["ID"] for c in out if "aux" in c)


def run_retention(config, env, dry_run: bool) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "dags",
            "test",
            "nightly_ci_retention",
            "-c",
            f'{{"dry_run": {str(dry_run).lower()}}}',
        ],
        env=airflow_env({"NIGHTLY_CI_CONFIG": str(config), **env}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    (config.parent / f"retention-{'dry' if dry_run else 'real'}.log").write_text(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc


def test_retention_deletes_stale_run_tags_and_old_artifacts_only(registries, airflow_home, tmp_path):
    engine = docker.APIClient(base_url=ENGINE, timeout=300)
    ecr, acr = registries("ecr"), registries("acr")
    old, recent = NOW - timedelta(days=9), NOW - timedelta(days=1)
    old_img, older_img, recent_img = (image_of_night(engine, n) for n in (old, old - timedelta(days=1), recent))
    tags = {
        "nightly-vllm-amd64": old_img,  # the moving tag still on an old night
        "nightly-vllm-amd64-run-scheduled-old": old_img,  # expired, but shares the moving tag's image
        "nightly-vllm-amd64-run-scheduled-older": older_img,  # expired: goes
        "nightly-sglang-arm64-run-scheduled-recent": recent_img,  # within 7 days
        "main-vllm-framework-amd64": recent_img,  # a framework cache tag is never a run tag
    }
    auth = RegistryAuth("ecr", "t", ecr.host, ecr.user, ecr.password)
    for tag, image in tags.items():
        push(engine, image, f"{ecr.host}/{REPO}", tag, auth, lambda _: None)
    acr_auth = RegistryAuth("acr", "t", acr.host, acr.user, acr.password)
    push(engine, older_img, f"{acr.host}/{REPO}", "nightly-vllm-amd64-run-scheduled-older", acr_auth, lambda _: None)

    artifacts = tmp_path / "artifacts"
    stale = artifacts / "scheduled-old" / "vllm_amd64" / "build" / "metrics-runtime.json"
    fresh = artifacts / "scheduled-recent" / "vllm_amd64" / "build" / "metrics-runtime.json"
    for f in (stale, fresh):
        f.parent.mkdir(parents=True)
        f.write_text("{}")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(stale, (ten_days_ago, ten_days_ago))

    config = write_config(
        tmp_path / "c.yaml",
        f"registries:\n  ecr: {{conn_id: rt_ecr}}\n  acr: {{conn_id: rt_acr}}\nartifacts: {{base: {artifacts}}}\n",
    )
    env = {**ecr.conn_env("rt_ecr"), **acr.conn_env("rt_acr", "azure_container_registry")}

    dry = run_retention(config, env, dry_run=True)
    assert "would delete ecr/ai-dynamo/dynamo:nightly-vllm-amd64-run-scheduled-older" in dry.stdout
    assert f"would delete file://{stale}" in dry.stdout
    assert set(ecr.tags(REPO)) == set(tags) and stale.exists()

    real = run_retention(config, env, dry_run=False)
    assert "deleted ecr/ai-dynamo/dynamo:nightly-vllm-amd64-run-scheduled-older" in real.stdout
    assert "deleted acr/ai-dynamo/dynamo:nightly-vllm-amd64-run-scheduled-older" in real.stdout
    assert set(ecr.tags(REPO)) == set(tags) - {"nightly-vllm-amd64-run-scheduled-older"}
    assert acr.tags(REPO) == []
    client = RegistryClient(auth)
    assert (
        present(client.image(REPO, "nightly-vllm-amd64")).digest
        == present(client.image(REPO, "nightly-vllm-amd64-run-scheduled-old")).digest
    )
    assert client.image(REPO, "main-vllm-framework-amd64") is not None
    assert not stale.exists() and fresh.exists()
