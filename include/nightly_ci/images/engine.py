"""A Docker engine reached through the Docker provider (a builder or a test runner), and
pulling and pushing images on it with registry credentials.

Progress is streamed line by line to a callback (the task log) as the engine reports it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from include.nightly_ci.errors import RegistryError, RegistryUnavailable
from include.nightly_ci.images.registries import RegistryAuth

if TYPE_CHECKING:
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


def engine_hook(conn_id: str | None, timeout: int = 600):
    """A DockerHook on an engine: an Airflow connection whose host is the engine URL
    (tcp://host:2376, unix:///...) with optional TLS files in its extras
    (tls_ca_cert, tls_client_cert, tls_client_key); None means the local engine.
    """
    from airflow.providers.docker.hooks.docker import DockerHook

    url: str = os.environ.get("DOCKER_HOST") or LOCAL_ENGINE
    tls = None
    if conn_id:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        host = conn.host or ""
        url = host if "://" in host else f"tcp://{host}:{conn.port or 2375}"
        extra = conn.extra_dejson
        if extra.get("tls_ca_cert"):
            tls = DockerHook.construct_tls_config(
                ca_cert=extra["tls_ca_cert"],
                client_cert=extra.get("tls_client_cert"),
                client_key=extra.get("tls_client_key"),
                verify=extra.get("tls_verify", True),
            )
    return DockerHook(docker_conn_id=None, base_url=url, tls=tls, timeout=timeout)


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
