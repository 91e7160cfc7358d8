"""A Docker engine reached through the Docker provider (a builder or a test runner), and
pulling and pushing images on it with registry credentials.

Progress is streamed line by line to a callback (the task log) as the engine reports it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightly_ci.errors import RegistryError, RegistryUnavailable
from include.nightly_ci.images.registries import RegistryAuth

if TYPE_CHECKING:
    from airflow.providers.docker.hooks.docker import DockerHook
    from docker import APIClient

LOCAL_ENGINE = "unix:///var/run/docker.sock"
_AUTH_WORDS = ("unauthorized", "authentication required", "denied", "no basic auth credentials", " 401 ", " 403 ")
_TRANSIENT_WORDS = (
    "connection refused",
    "connection reset",
    "i/o timeout",
    "timeout",
    "eof",
    "no such host",
    "500 internal server error",
    "service unavailable",
    "bad gateway",
    "gateway timeout",
)
# A 5xx where the text says it is a status ("HTTP status: 503", "HTTP 502 response"); bare
# digits are not one: a port (127.0.0.1:50373) or a digest holds them too.
_SERVER_ERROR = re.compile(r"\bhttp(?: status)?:? 5\d\d\b")

LineSink = Callable[[str], None]


def engine_client(conn_id: str | None, timeout: int = 600) -> APIClient:
    """The Docker engine of a builder or a test runner (see engine_hook)."""
    return engine_hook(conn_id, timeout).api_client


@dataclass(frozen=True)
class EngineTarget:
    """Where an engine is: its URL and, for TLS, the files of its extras."""

    url: str
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True


def engine_target(conn_id: str | None) -> EngineTarget:
    """The engine of CONN_ID: an Airflow connection whose host is the engine URL
    (tcp://host:2376, unix:///...) with optional TLS files in its extras (tls_ca_cert,
    tls_client_cert, tls_client_key, tls_verify); None means the local engine
    (DOCKER_HOST, else the default socket)."""
    if not conn_id:
        return EngineTarget(os.environ.get("DOCKER_HOST") or LOCAL_ENGINE)
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    host = conn.host or ""
    url = host if "://" in host else f"tcp://{host}:{conn.port or 2375}"
    extra = conn.extra_dejson
    return EngineTarget(
        url,
        extra.get("tls_ca_cert"),
        extra.get("tls_client_cert"),
        extra.get("tls_client_key"),
        bool(extra.get("tls_verify", True)),
    )


def engine_hook(conn_id: str | None, timeout: int = 600) -> DockerHook:
    """A DockerHook on the engine of CONN_ID (see engine_target)."""
    from airflow.providers.docker.hooks.docker import DockerHook

    target = engine_target(conn_id)
    tls = None
    if target.ca_cert:
        tls = DockerHook.construct_tls_config(
            ca_cert=target.ca_cert,
            client_cert=target.client_cert,
            client_key=target.client_key,
            verify=target.verify,
        )
    return DockerHook(docker_conn_id=None, base_url=target.url, tls=tls, timeout=timeout)


def cli_environment(conn_id: str | None, auths: list[RegistryAuth], folder: str) -> dict[str, str]:
    """The environment for the docker CLI on the engine of CONN_ID, logged in to AUTHS'
    registries: its TLS files and a config.json with the registry credentials are written
    to FOLDER (the caller's private temporary folder), never to the log or the image."""
    target = engine_target(conn_id)
    env = {"DOCKER_HOST": target.url, "DOCKER_CONFIG": os.path.join(folder, "docker-config")}
    os.makedirs(env["DOCKER_CONFIG"], mode=0o700, exist_ok=True)
    logins = {
        a.host: {"auth": base64.b64encode(f"{a.username}:{a.password}".encode()).decode()} for a in auths if a.username
    }
    _private_file(os.path.join(env["DOCKER_CONFIG"], "config.json"), json.dumps({"auths": logins}))
    if target.ca_cert:
        certs = os.path.join(folder, "certs")
        os.makedirs(certs, mode=0o700, exist_ok=True)
        files = {"ca.pem": target.ca_cert, "cert.pem": target.client_cert, "key.pem": target.client_key}
        for name, source in files.items():
            if source:
                with open(source) as f:
                    _private_file(os.path.join(certs, name), f.read())
        env["DOCKER_CERT_PATH"] = certs
        if target.verify:
            env["DOCKER_TLS_VERIFY"] = "1"
    return env


def _private_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def classify_push_error(message: str, auth: RegistryAuth) -> RegistryError:
    """An engine's push/pull error text as the error class that decides retrying."""
    text = f" {message.lower()} "
    if any(w in text for w in _AUTH_WORDS):
        return auth.auth_failure(message.strip())
    if any(w in text for w in _TRANSIENT_WORDS) or _SERVER_ERROR.search(text):
        return RegistryUnavailable(message.strip())
    return RegistryError(message.strip())


def _follow(stream: Iterable[dict[str, Any]], auth: RegistryAuth, sink: LineSink) -> str:
    """Log a pull/push progress stream (status changes only); the digest it reports."""
    digest, last = "", ""
    for chunk in stream:
        if "error" in chunk:
            raise classify_push_error(chunk.get("errorDetail", {}).get("message") or chunk["error"], auth)
        aux = chunk.get("aux") or {}
        digest = aux.get("Digest", digest)
        status = chunk.get("status", "")
        if status.startswith("Digest: "):
            digest = status.split(" ", 1)[1]
        line = " ".join(p for p in (chunk.get("id", ""), status) if p)
        if status and chunk.get("progressDetail") in (None, {}) and line != last:
            sink(line)
            last = line
    return digest


def pull(client: APIClient, ref: str, auth: RegistryAuth, platform: str, sink: LineSink) -> str:
    """Pull REF (repo:tag or repo@digest); its digest. Missing images raise RegistryError."""
    import docker.errors

    repo, _, tag = ref.rpartition("@") if "@" in ref else ref.rpartition(":")
    try:
        stream = client.pull(repo, tag=tag, platform=platform, auth_config=auth.auth_config(), stream=True, decode=True)
        return _follow(stream, auth, sink)
    except docker.errors.APIError as exc:
        raise classify_push_error(str(exc.explanation or exc), auth) from None


def push(client: APIClient, image_id: str, repository_ref: str, tag: str, auth: RegistryAuth, sink: LineSink) -> str:
    """Tag IMAGE_ID as REPOSITORY_REF:TAG on the engine and push it; the pushed digest."""
    client.tag(image_id, repository_ref, tag=tag, force=True)
    started = time.monotonic()
    stream = client.push(repository_ref, tag=tag, auth_config=auth.auth_config(), stream=True, decode=True)
    digest = _follow(stream, auth, sink)
    sink(f"pushed {repository_ref}:{tag} {digest} in {time.monotonic() - started:.1f} s")
    return digest
