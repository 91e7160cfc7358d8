"""Registries for real, on loopback: credentials, auth failures, outages, ECR via moto."""

from __future__ import annotations

import json
import logging
import threading
import time

import docker
import pytest

from include.nightly_ci.errors import RegistryAuthError, RegistryError
from include.nightly_ci.images.engine import pull, push
from include.nightly_ci.images.registries import (
    RegistryClient,
    registry_auth,
    retry_transient,
)
from include.nightly_ci.plan import Registry
from tests.services import ENGINE, MotoServer, present

pytestmark = pytest.mark.integration
BASE = "nightly-ci-base:bookworm-amd64"


@pytest.fixture(scope="module")
def engine():
    return docker.APIClient(base_url=ENGINE, timeout=300)


@pytest.fixture(scope="module")
def small_image(engine, provisioned):
    """A one-layer image to push (a label on the local base image)."""
    import io

    dockerfile = f"FROM {BASE}\nLABEL purpose=nightly-ci-test\n".encode()
    out = list(
        engine.build(
            fileobj=io.BytesIO(dockerfile), tag="nightly-ci-test/small:latest", rm=True, forcerm=True, decode=True
        )
    )
    return next(c["aux"]["ID"] for c in out if "aux" in c)


def plain(reg, monkeypatch, password=None, conn_id="test_registry") -> Registry:
    for k, v in reg.conn_env(conn_id, password=password).items():
        monkeypatch.setenv(k, v)
    return Registry("plain", "docker", conn_id, "nightly-ci/test")


def test_push_and_read_back_through_a_docker_connection(registries, monkeypatch, engine, small_image):
    reg = registries()
    auth = registry_auth(plain(reg, monkeypatch))
    assert (auth.host, auth.username) == (reg.host, "ci")
    digest = push(engine, small_image, f"{reg.host}/nightly-ci/test", "t1", auth, lambda _: None)
    remote = present(RegistryClient(auth).image("nightly-ci/test", "t1"))
    assert remote.digest == digest and remote.labels["purpose"] == "nightly-ci-test"
    assert remote.architecture == "amd64"
    assert RegistryClient(auth).image("nightly-ci/test", "missing") is None


def test_wrong_password_fails_fast_and_names_the_connection(registries, monkeypatch, engine, small_image):
    reg = registries()
    auth = registry_auth(plain(reg, monkeypatch, password="wrong", conn_id="ecr_prod"))
    started = time.monotonic()
    with pytest.raises(RegistryAuthError) as info:
        retry_transient(
            "push",
            lambda: push(engine, small_image, f"{reg.host}/nightly-ci/test", "t", auth, lambda _: None),
            attempts=5,
            backoff=5,
            backoff_max=30,
        )
    assert time.monotonic() - started < 5  # no backoff: 401 is final
    message = str(info.value)
    assert "'ecr_prod'" in message and "refused the credentials" in message and "wrong" not in message
    with pytest.raises(RegistryAuthError, match="'ecr_prod'"):
        RegistryClient(auth).image("nightly-ci/test", "t")


def test_a_registry_down_for_a_few_seconds_is_retried_and_the_push_succeeds(
    registries, monkeypatch, engine, small_image, caplog
):
    reg = registries()
    auth = registry_auth(plain(reg, monkeypatch))
    reg.stop()
    restart = threading.Timer(3.0, reg.start)
    restart.start()
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    try:
        digest = retry_transient(
            "push",
            lambda: push(engine, small_image, f"{reg.host}/nightly-ci/test", "t2", auth, lambda _: None),
            attempts=8,
            backoff=0.5,
            backoff_max=2,
        )
    finally:
        restart.join()
    assert time.monotonic() - started >= 2.5
    assert digest.startswith("sha256:")
    assert present(RegistryClient(auth).image("nightly-ci/test", "t2")).digest == digest
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert retries and "connection refused" in retries[0].getMessage().lower()


def test_ecr_login_through_ecrhook_on_moto_with_the_token_masked(registries, monkeypatch, engine, small_image):
    from airflow.sdk._shared.secrets_masker import redact

    moto = MotoServer()
    moto.start()
    try:
        # A registry that accepts exactly moto's ECR token, reached through an endpoint override.
        reg = registries("ecr", user="AWS", password=MotoServer.ECR_PASSWORD)
        for k, v in moto.conn_env("test_aws").items():
            monkeypatch.setenv(k, v)
        auth = registry_auth(Registry("ecr", "ecr", "test_aws", "nightly-ci/test", host_override=reg.host))
        assert auth.username == "AWS" and auth.password == MotoServer.ECR_PASSWORD
        assert MotoServer.ECR_PASSWORD not in redact(f"token={auth.password}")
        assert MotoServer.ECR_PASSWORD not in repr(auth)
        digest = push(engine, small_image, f"{reg.host}/nightly-ci/test", "ecr", auth, lambda _: None)
        assert present(RegistryClient(auth).image("nightly-ci/test", "ecr")).digest == digest
        pulled = pull(engine, f"{reg.host}/nightly-ci/test@{digest}", auth, "linux/amd64", lambda _: None)
        assert pulled == digest
    finally:
        moto.stop()


def test_acr_credentials_through_azure_container_registry_hook(registries, monkeypatch):
    reg = registries("acr")
    for k, v in reg.conn_env("test_acr", conn_type="azure_container_registry").items():
        monkeypatch.setenv(k, v)
    auth = registry_auth(Registry("acr", "acr", "test_acr", "nightly-ci/test"))
    assert (auth.host, auth.username, auth.password) == (reg.host, "ci", reg.password)
    assert RegistryClient(auth).tags("nightly-ci/test") == []


def test_within_ecr_a_promotion_is_a_manifest_put_through_ecrhook(monkeypatch):
    """The push task's path for a real ECR (no host_override): batch_get_image then
    put_image with the same manifest under the new tag, so no image bytes move."""
    import boto3

    from include.nightly_ci.images.promote import ecr_retag, uses_ecr_api

    moto = MotoServer()
    moto.start()
    try:
        for k, v in moto.conn_env("promote_aws").items():
            monkeypatch.setenv(k, v)
        ecr = boto3.client(
            "ecr", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        ecr.create_repository(repositoryName="ai-dynamo/dynamo")
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": 2,
                    "digest": "sha256:" + "c" * 64,
                },
                "layers": [],
            }
        )
        built = ecr.put_image(repositoryName="ai-dynamo/dynamo", imageManifest=manifest, imageTag="run-1-build-runtime")
        digest = built["image"]["imageId"]["imageDigest"]
        registry = Registry("ecr", "ecr", "promote_aws", "ai-dynamo/dynamo")
        assert uses_ecr_api(registry)
        assert ecr_retag(registry, digest, "nightly-vllm-amd64") == digest
        assert ecr_retag(registry, digest, "nightly-vllm-amd64") == digest  # a re-run: the tag holds it already
        tags = ecr.describe_images(repositoryName="ai-dynamo/dynamo")["imageDetails"][0]["imageTags"]
        assert sorted(tags) == ["nightly-vllm-amd64", "run-1-build-runtime"]
        with pytest.raises(RegistryError, match="has no image sha256:"):
            ecr_retag(registry, "sha256:" + "d" * 64, "nightly-vllm-amd64")
    finally:
        moto.stop()
