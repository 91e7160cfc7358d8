"""A Docker engine reached through the Docker provider (a builder or a test runner), and
pulling and pushing images on it with registry credentials.

Progress is streamed line by line to a callback (the task log) as the engine reports it.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.nightly_ci.errors import (
    EngineConfigError,
    EngineUnavailable,
    RegistryError,
    RegistryRateLimited,
    RegistryUnavailable,
)
from include.nightly_ci.images.registries import RegistryAuth

if TYPE_CHECKING:
    from airflow.providers.docker.hooks.docker import DockerHook
    from docker import APIClient
    from docker.tls import TLSConfig

log = logging.getLogger(__name__)
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
# A rate limit (Docker Hub's "toomanyrequests", NGC's "TOOMANYREQUESTS", a bare status):
# it passes, so it is backed off; the engine does not pass on a Retry-After.
_RATE_LIMITED = re.compile(r"toomanyrequests|too many requests|\bhttp(?: status)?:? 429\b")

LineSink = Callable[[str], None]


def engine_client(conn_id: str | None, timeout: int = 600) -> APIClient:
    """The Docker engine of a builder or a test runner (see engine_hook)."""
    return engine_hook(conn_id, timeout).api_client


def _connect(url: str, tls: TLSConfig | bool | None, timeout: int, conn_id: str | None) -> APIClient:
    """A client on the engine at URL, at the API version the engine speaks, that has
    answered a ping. Built here rather than by DockerHook because requests lets
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's CA (psf/requests#3829): on a
    worker that sets them for other traffic, the engine's own CA would be ignored. So the
    session stops reading the environment before its first request."""
    from docker import APIClient
    from docker.errors import DockerException
    from requests.exceptions import SSLError

    def client(version: str) -> APIClient:
        c = APIClient(base_url=url, version=version, tls=tls or False, timeout=timeout)
        c.trust_env = False
        return c

    where = f"engine {url}" + (f" (connection {conn_id!r})" if conn_id else "")
    try:
        # /version answers at any API version; the oldest one every engine accepts.
        with client("1.24") as probe:
            version = probe.version(api_version=False)["ApiVersion"]
        engine = client(version)
        engine.ping()
    except SSLError as exc:
        raise EngineConfigError(f"{where}: TLS handshake failed (wrong CA or client certificate?): {exc}") from None
    except DockerException as exc:
        raise EngineUnavailable(f"{where} can't be reached: {exc}") from None
    except OSError as exc:  # requests' ConnectionError is one
        raise EngineUnavailable(f"{where} can't be reached: {exc}") from None
    return engine


_TLS_FIELDS = {"ca.pem": "tls_ca_cert", "cert.pem": "tls_client_cert", "key.pem": "tls_client_key"}


@dataclass(frozen=True)
class EngineTarget:
    """Where an engine is: its URL and, for TLS, the PEM texts of its connection."""

    url: str
    tls: dict[str, str] = field(default_factory=dict, repr=False)  # ca.pem, cert.pem, key.pem -> PEM text
    verify: bool = True


def engine_target(conn_id: str | None) -> EngineTarget:
    """The engine of CONN_ID: an Airflow connection whose host is the engine URL
    (tcp://host:2376, unix:///...) with TLS as PEM texts in its extras (tls_ca_cert,
    tls_client_cert, tls_client_key; tls_verify), so that no worker needs certificate
    files of its own. A tcp:// engine without TLS is refused unless the connection says
    `"allow_insecure": true`. None means the local engine (DOCKER_HOST, else the socket)."""
    if not conn_id:
        return EngineTarget(os.environ.get("DOCKER_HOST") or LOCAL_ENGINE)
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    host = conn.host or ""
    url = host if "://" in host else f"tcp://{host}:{conn.port or 2375}"
    extra = conn.extra_dejson
    tls = {name: str(extra[key]) for name, key in _TLS_FIELDS.items() if extra.get(key)}
    for name, text in tls.items():
        if not text.lstrip().startswith("-----BEGIN"):
            raise EngineConfigError(
                f"engine connection {conn_id!r}: extra {_TLS_FIELDS[name]} must hold the PEM text itself "
                "(-----BEGIN ...), not a path: workers have no files of their own"
            )
    if tls and len(tls) < len(_TLS_FIELDS):
        # The provider's TLS config falls back to plain HTTP when one is missing.
        missing = ", ".join(key for name, key in _TLS_FIELDS.items() if name not in tls)
        raise EngineConfigError(f"engine connection {conn_id!r}: TLS needs all three PEM extras; missing {missing}")
    insecure_ok = extra.get("allow_insecure") is True
    # tcp:// and http:// are both plain HTTP without TLS (docker-py talks http:// as given).
    plain = url.startswith(("tcp://", "http://")) and not tls
    if plain and not insecure_ok:
        raise EngineConfigError(
            f"engine connection {conn_id!r} is {url} without TLS: give it tls_ca_cert, tls_client_cert and "
            'tls_client_key (PEM), or set extra "allow_insecure": true to accept an unencrypted engine'
        )
    verify = extra.get("tls_verify", True) is not False
    if tls and not verify and not insecure_ok:
        raise EngineConfigError(
            f'engine connection {conn_id!r} has "tls_verify": false: the engine\'s certificate would not be '
            'checked; set extra "allow_insecure": true as well to accept that'
        )
    # Allowed, but never silent: every pull and push sends registry credentials to the engine.
    if plain:
        log.warning(
            "engine connection %r is %s without TLS (allow_insecure): registry credentials sent with every pull "
            "and push cross the network in cleartext",
            conn_id,
            url,
        )
    elif tls and not verify:
        log.warning(
            "engine connection %r: the engine's certificate is not checked (tls_verify false, allow_insecure): "
            "anyone in between can read the registry credentials",
            conn_id,
        )
    return EngineTarget(url, tls, verify)


def write_tls(target: EngineTarget, folder: str) -> dict[str, str]:
    """The TLS files of TARGET in FOLDER (0600 in a 0700 folder): name -> path."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    paths = {}
    for name, text in target.tls.items():
        paths[name] = os.path.join(folder, name)
        _private_file(paths[name], text)
    return paths


def engine_hook(conn_id: str | None, timeout: int = 600) -> DockerHook:
    """A DockerHook on the engine of CONN_ID (see engine_target). Its TLS files live in a
    private folder for as long as this process does."""
    from airflow.providers.docker.hooks.docker import DockerHook

    target = engine_target(conn_id)
    tls = None
    if target.tls:
        folder = tempfile.mkdtemp(prefix="nightly-ci-tls-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        files = write_tls(target, folder)
        tls = DockerHook.construct_tls_config(
            ca_cert=files.get("ca.pem"),
            client_cert=files.get("cert.pem"),
            client_key=files.get("key.pem"),
            verify=target.verify,
        )
    hook = DockerHook(docker_conn_id=None, base_url=target.url, tls=tls, timeout=timeout)
    hook.__dict__["api_client"] = _connect(target.url, tls, timeout, conn_id)  # its cached_property, filled
    return hook


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
    if target.tls:
        write_tls(target, os.path.join(folder, "certs"))
        env["DOCKER_CERT_PATH"] = os.path.join(folder, "certs")
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
    if _RATE_LIMITED.search(text):
        return RegistryRateLimited(message.strip())
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
