"""Build, pull, tag and push images on a Docker engine reached through the Docker provider.

The build context travels to the engine over its API, so the builder needs no file
system shared with the worker. Output is streamed line by line to a callback (the task
log) as the engine produces it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.nightly_ci.registries import RegistryAuth, RegistryError, RegistryUnavailable

if TYPE_CHECKING:
    from docker import APIClient

LOCAL_ENGINE = "unix:///var/run/docker.sock"
_STEP = re.compile(r"^Step (\d+)/(\d+) : (\w+)")
_AUTH_WORDS = ("unauthorized", "authentication required", "denied", "no basic auth credentials", " 401 ", " 403 ")
_TRANSIENT_WORDS = (
    "connection refused",
    "connection reset",
    "i/o timeout",
    "timeout",
    "eof",
    "no such host",
    "503",
    "502",
    "504",
    "500 internal server error",
    "unexpected http status: 5",
    "service unavailable",
    "bad gateway",
)

LineSink = Callable[[str], None]


class BuildError(RuntimeError):
    """The Dockerfile failed; the message carries the failing step's output."""


def engine_client(conn_id: str | None, timeout: int = 600) -> APIClient:
    """The Docker engine of a builder or a test runner (see engine_hook)."""
    return engine_hook(conn_id, timeout).api_client


def engine_hook(conn_id: str | None, timeout: int = 600):
    """A DockerHook on an engine: an Airflow connection whose host is the engine URL
    (tcp://host:2376, unix:///...) with optional TLS files in its extras
    (tls_ca_cert, tls_client_cert, tls_client_key); None means the local engine.
    """
    from airflow.providers.docker.hooks.docker import DockerHook

    url, tls = os.environ.get("DOCKER_HOST") or LOCAL_ENGINE, None
    if conn_id:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        url = conn.host if "://" in (conn.host or "") else f"tcp://{conn.host}:{conn.port or 2375}"
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
    if any(w in text for w in _TRANSIENT_WORDS):
        return RegistryUnavailable(message.strip())
    return RegistryError(message.strip())


@dataclass
class BuildResult:
    image_id: str
    steps_total: int = 0
    steps_cached: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def cache_hit_rate(self) -> float:
        return round(self.steps_cached / self.steps_total, 4) if self.steps_total else 0.0


def parse_build_stream(chunks: Iterable[dict[str, Any]], sink: LineSink) -> BuildResult:
    """Follow a classic-builder stream: log every line, count steps and cache hits.

    FROM, and ARGs before the first FROM, are not counted: they select a base image and
    are never "cached".
    """
    result = BuildResult(image_id="")
    pending = ""
    counting = seen_from = False
    for chunk in chunks:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            tail = "\n".join(result.log[-30:])
            raise BuildError(f"build failed: {detail}\n--- last output ---\n{tail}")
        if "aux" in chunk and "ID" in chunk["aux"]:
            result.image_id = chunk["aux"]["ID"]
        pending += chunk.get("stream", "")
        while "\n" in pending:
            line, pending = pending.split("\n", 1)
            result.log.append(line)
            sink(line)
            step = _STEP.match(line)
            if step:
                is_from = step.group(3).upper() == "FROM"
                seen_from = seen_from or is_from
                counting = seen_from and not is_from
                result.steps_total += counting
            elif counting and line.strip() == "---> Using cache":
                result.steps_cached += 1
    if pending:
        result.log.append(pending)
        sink(pending)
    if not result.image_id:
        raise BuildError("the engine reported no image id; last output:\n" + "\n".join(result.log[-30:]))
    return result


def build(
    client: APIClient,
    *,
    context_dir: str,
    dockerfile: str,
    target: str,
    tag: str,
    platform: str,
    build_args: dict[str, str],
    labels: dict[str, str],
    cache_from: list[str],
    network_mode: str | None,
    sink: LineSink,
) -> BuildResult:
    """Build TARGET of the project's Dockerfile, then stamp LABELS on the result.

    The labels change every run; added by the Dockerfile build they would be steps that
    never hit the cache and would break the cache chain for what follows. Stamped in a
    one-line metadata-only build on top, the project's own steps stay fully cacheable.
    """
    stream = client.build(
        path=context_dir,
        dockerfile=dockerfile,
        target=target,
        platform=platform,
        buildargs=build_args,
        cache_from=cache_from or None,
        network_mode=network_mode,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    result = parse_build_stream(stream, sink)
    result.image_id = stamp_labels(client, result.image_id, labels, tag, platform, sink)
    return result


def stamp_labels(
    client: APIClient, image_id: str, labels: dict[str, str], tag: str, platform: str, sink: LineSink
) -> str:
    """IMAGE_ID with LABELS added (no new layer), tagged TAG; the new image id."""
    import io

    stream = client.build(
        fileobj=io.BytesIO(f"FROM {image_id}\n".encode()),
        labels=labels,
        tag=tag,
        platform=platform,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    return parse_build_stream(stream, sink).image_id


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
