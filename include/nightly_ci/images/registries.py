"""Registry credentials from Airflow connections, and the registry HTTP API.

ECR goes through EcrHook (a temporary token, masked the moment it exists), ACR through
AzureContainerRegistryHook, any other registry through a Docker-type connection. The
HTTP client speaks the distribution API (Basic or Bearer-token auth) to read what a tag
holds without pulling it: its digest, architecture and labels.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from include.nightly_ci.errors import (
    NightlyCiError,
    RegistryAuthError,
    RegistryError,
    RegistryRateLimited,
    RegistryUnavailable,
)
from include.nightly_ci.images.pages import json_object, next_page

if TYPE_CHECKING:
    import requests

    from include.nightly_ci.plan import Registry

log = logging.getLogger(__name__)
T = TypeVar("T")

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
# Loopback hosts, with or without a port: only these get plain HTTP (not a host whose
# name merely starts with "localhost" or "127.", L1).
_LOOPBACK = re.compile(r"(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?")
# One parameter of a WWW-Authenticate challenge: key="value" (commas inside) or key=token.
_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def bearer_challenge(challenge: str) -> dict[str, str]:
    """The parameters of a `Bearer realm=...,service=...,scope=...` challenge; a quoted
    value keeps its commas (`scope="repository:x:pull,push"`, L2)."""
    return {m[1]: m[2] if m[2] else m[3] for m in _CHALLENGE_PARAM.finditer(challenge.removeprefix("Bearer "))}


@dataclass(frozen=True)
class RegistryAuth:
    name: str
    conn_id: str
    host: str
    username: str
    password: str = field(repr=False)

    @property
    def scheme(self) -> str:
        # Docker itself talks plain HTTP to registries on loopback; so do we.
        return "http" if _LOOPBACK.fullmatch(self.host) else "https"

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "serveraddress": self.host}

    def ref(self, repository: str, tag: str) -> str:
        return f"{self.host}/{repository}:{tag}"

    def auth_failure(self, detail: str) -> RegistryAuthError:
        return RegistryAuthError(
            f"registry {self.name!r} ({self.host}) refused the credentials of Airflow connection "
            f"{self.conn_id!r}: {detail}. Check the connection's login and password (or its AWS/Azure identity)."
        )


def _strip_scheme(host: str) -> str:
    return host.split("://", 1)[-1].rstrip("/")


def _mask(secret: str) -> None:
    from airflow.sdk.log import mask_secret

    mask_secret(secret)


def registry_auth(reg: Registry) -> RegistryAuth:
    """Credentials for REG from its Airflow connection, through the provider's hook. What
    the cloud SDKs raise becomes ours by cause (see images.cloud)."""
    try:
        return _registry_auth(reg)
    except NightlyCiError:
        raise
    except Exception as exc:
        from include.nightly_ci.images.cloud import cloud_failure

        ours = cloud_failure(reg, exc)
        if ours is None:
            raise
        raise ours from exc


def _registry_auth(reg: Registry) -> RegistryAuth:
    if reg.kind == "ecr":
        from airflow.providers.amazon.aws.hooks.ecr import EcrHook

        creds = EcrHook(aws_conn_id=reg.conn_id).get_temporary_credentials(registry_ids=reg.registry_id)
        if not creds:
            raise RegistryError(f"ECR returned no authorization data for connection {reg.conn_id!r}")
        cred = creds[0]  # EcrCredentials masks its password on creation
        host = reg.host_override or _strip_scheme(cred.proxy_endpoint)
        return RegistryAuth(reg.name, reg.conn_id, host, cred.username, cred.password)
    if reg.kind == "acr":
        from airflow.providers.microsoft.azure.hooks.container_registry import AzureContainerRegistryHook

        acr = AzureContainerRegistryHook(conn_id=reg.conn_id).get_conn()
        if not acr.username or not acr.password:
            raise RegistryAuthError(f"connection {reg.conn_id!r} of registry {reg.name!r} has no login or password")
        _mask(acr.password)
        host = reg.host_override or _strip_scheme(acr.server)
        return RegistryAuth(reg.name, reg.conn_id, host, acr.username, acr.password)
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(reg.conn_id)
    if not conn.host:
        raise RegistryError(f"connection {reg.conn_id!r} of registry {reg.name!r} has no host")
    host = _strip_scheme(conn.host) + (f":{conn.port}" if conn.port else "")
    if conn.password:
        _mask(conn.password)
    return RegistryAuth(reg.name, reg.conn_id, reg.host_override or host, conn.login or "", conn.password or "")


def retry_transient(
    what: str,
    func: Callable[[], T],
    *,
    attempts: int,
    backoff: float,
    backoff_max: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """FUNC, retried on RegistryUnavailable with capped exponential backoff."""
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            return func()
        except RegistryUnavailable as exc:
            if attempt == attempts:
                raise RegistryUnavailable(f"{what}: still failing after {attempts} attempts: {exc}") from exc
            # A 429's Retry-After is what the registry asked for; never longer than backoff_max.
            asked = exc.retry_after if isinstance(exc, RegistryRateLimited) else None
            wait = delay if asked is None else min(asked, backoff_max)
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.1f s", what, attempt, attempts, exc, wait)
            sleep(wait)
            delay = min(delay * 2, backoff_max)
    raise AssertionError("unreachable")


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None when absent
    or unreadable."""
    from email.utils import parsedate_to_datetime

    text = (value or "").strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Sized:
    """A stream of known length: requests then sends it with its Content-Length, block by
    block, instead of buffering it or sending it chunked (which registries refuse)."""

    def __init__(self, stream: Any, size: int):
        self.stream, self.size = stream, size

    def __len__(self) -> int:
        return self.size

    def read(self, amount: int = -1) -> bytes:
        return bytes(self.stream.read(amount))


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as stored: its bytes (its digest is theirs), type and digest."""

    body: bytes = field(repr=False)
    media_type: str
    digest: str

    def blobs(self) -> list[tuple[str, int]]:
        """(digest, size) of the config and every layer of an image manifest."""
        data = json.loads(self.body)
        return [(b["digest"], int(b.get("size", 0))) for b in [data["config"], *data.get("layers", [])]]

    @property
    def children(self) -> list[str]:
        """The digests an index (a manifest list) points at; none for an image manifest."""
        return [m["digest"] for m in json.loads(self.body).get("manifests", [])]


@dataclass(frozen=True)
class RemoteImage:
    digest: str
    architecture: str
    labels: dict[str, str]
    layers: tuple[str, ...] = ()  # the config's rootfs diff ids: what the image holds


class RegistryClient:
    """The parts of the distribution HTTP API this project needs."""

    def __init__(self, auth: RegistryAuth, timeout: float = 30):
        import requests

        self.auth = auth
        self.timeout = timeout
        self.session = requests.Session()
        self._token: str | None = None

    def _url(self, path: str) -> str:
        return f"{self.auth.scheme}://{self.auth.host}/v2/{path}"

    def _bearer_token(self, challenge: str) -> str:
        params = bearer_challenge(challenge)
        realm = params.pop("realm")
        resp = self._send("GET", realm, params=params, auth=(self.auth.username, self.auth.password))
        if resp.status_code in (401, 403):
            raise self.auth.auth_failure(f"token endpoint answered {resp.status_code}")
        body = resp.json()
        return body.get("token") or body["access_token"]

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        import requests

        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RegistryUnavailable(f"{self.auth.host} unreachable: {exc}") from exc
        if resp.status_code >= 500:
            raise RegistryUnavailable(f"{method} {url} answered {resp.status_code}")
        if resp.status_code == 429:  # a rate limit passes: backed off, as long as it asks
            after = retry_after_seconds(resp.headers.get("Retry-After"))
            raise RegistryRateLimited(f"{method} {url} answered 429 Too Many Requests", retry_after=after)
        return resp

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, *, url: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """METHOD on /v2/PATH (or on URL, an upload location), authenticated; KWARGS go to
        requests (data, params, stream). A body that is a stream cannot be sent twice:
        authenticate first with a request without one."""
        headers = dict(headers or {})
        url = url or self._url(path)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
            resp = self._send(method, url, headers=headers, **kwargs)
        else:
            resp = self._send(method, url, headers=headers, auth=(self.auth.username, self.auth.password), **kwargs)
        challenge = resp.headers.get("WWW-Authenticate", "")
        if resp.status_code == 401 and challenge.startswith("Bearer "):
            self._token = self._bearer_token(challenge)
            headers["Authorization"] = f"Bearer {self._token}"
            resp = self._send(method, url, headers=headers, **kwargs)
        if resp.status_code in (401, 403):
            raise self.auth.auth_failure(f"{method} /v2/{path} answered {resp.status_code}")
        return resp

    def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest REFERENCE (a tag or digest) holds, as the registry stores it."""
        resp = self.request("GET", f"{repository}/manifests/{reference}", {"Accept": MANIFEST_TYPES})
        if resp.status_code != 200:
            raise RegistryError(f"GET manifest {repository}:{reference} answered {resp.status_code}: {resp.text[:200]}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0]
        return Manifest(resp.content, media_type, resp.headers.get("Docker-Content-Digest", ""))

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Store MANIFEST as REFERENCE (a tag, or its digest); the digest the registry reports."""
        resp = self.request(
            "PUT", f"{repository}/manifests/{reference}", {"Content-Type": manifest.media_type}, data=manifest.body
        )
        if resp.status_code not in (200, 201):
            raise RegistryError(f"PUT manifest {repository}:{reference} answered {resp.status_code}: {resp.text[:200]}")
        return resp.headers.get("Docker-Content-Digest", manifest.digest)

    def has_blob(self, repository: str, digest: str) -> bool:
        resp = self.request("HEAD", f"{repository}/blobs/{digest}")
        if resp.status_code not in (200, 404):
            raise RegistryError(f"HEAD blob {repository}@{digest} answered {resp.status_code}")
        return resp.status_code == 200

    def copy_blob_to(self, target: RegistryClient, repository: str, digest: str, target_repository: str) -> int:
        """Stream the blob DIGEST of REPOSITORY into TARGET's TARGET_REPOSITORY; its size."""
        source = self.request("GET", f"{repository}/blobs/{digest}", stream=True)
        if source.status_code != 200:
            raise RegistryError(f"GET blob {repository}@{digest} answered {source.status_code}")
        size = int(source.headers.get("Content-Length", "0"))
        start = target.request("POST", f"{target_repository}/blobs/uploads/")  # authenticates for the push, too
        if start.status_code != 202 or "Location" not in start.headers:
            raise RegistryError(f"POST upload to {target.auth.host}/{target_repository} answered {start.status_code}")
        location = start.headers["Location"]
        if location.startswith("/"):
            location = f"{target.auth.scheme}://{target.auth.host}{location}"
        sep = "&" if "?" in location else "?"
        done = target.request(
            "PUT",
            "",
            {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            url=f"{location}{sep}digest={digest}",
            data=_Sized(source.raw, size),
        )
        if done.status_code != 201:
            raise RegistryError(
                f"PUT blob {digest} to {target.auth.host}/{target_repository} answered {done.status_code}"
            )
        return size

    def image(self, repository: str, reference: str) -> RemoteImage | None:
        """What REFERENCE (a tag or digest) holds, or None if it does not exist. Content that
        is not a readable image (a manifest or config that is not JSON, an empty index) is a
        RegistryError naming the tag, not a crash of whoever asked."""
        where = f"{repository}:{reference}"
        resp = self.request("GET", f"{repository}/manifests/{reference}", {"Accept": MANIFEST_TYPES})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RegistryError(f"GET manifest {where} answered {resp.status_code}: {resp.text[:200]}")
        digest = resp.headers.get("Docker-Content-Digest", "")
        manifest = json_object(resp, f"the manifest of {where}")
        if "manifests" in manifest:  # an index: describe its first image
            children = manifest["manifests"] or []
            if not children or not isinstance(children[0], dict) or "digest" not in children[0]:
                raise RegistryError(f"{where} is an index without images")
            child = self.request("GET", f"{repository}/manifests/{children[0]['digest']}", {"Accept": MANIFEST_TYPES})
            manifest = json_object(child, f"the first image of index {where}")
        config_ref = manifest.get("config")
        if not isinstance(config_ref, dict) or "digest" not in config_ref:
            raise RegistryError(f"the manifest of {where} names no config blob")
        blob = self.request("GET", f"{repository}/blobs/{config_ref['digest']}")
        if blob.status_code != 200:
            raise RegistryError(f"GET config blob of {where} answered {blob.status_code}")
        config = json_object(blob, f"the config blob of {where}")
        labels = (config.get("config") or {}).get("Labels") or {}
        layers = tuple((config.get("rootfs") or {}).get("diff_ids") or ())
        return RemoteImage(digest, config.get("architecture", ""), labels, layers)

    def digest(self, repository: str, reference: str) -> str | None:
        """The digest REFERENCE (a tag or digest) holds, from the manifest's headers alone
        (nothing is parsed), or None if it does not exist."""
        resp = self.request("HEAD", f"{repository}/manifests/{reference}", {"Accept": MANIFEST_TYPES})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200 or not resp.headers.get("Docker-Content-Digest"):
            raise RegistryError(f"HEAD manifest {repository}:{reference} answered {resp.status_code} without a digest")
        return resp.headers["Docker-Content-Digest"]

    def tags(self, repository: str, page_size: int | None = None) -> list[str]:
        """Every tag of REPOSITORY, page after page: registries (ECR, ACR, distribution 3)
        return one page of `tags/list` with a Link header to the next. PAGE_SIZE asks for
        pages of that many (`n`); None takes the registry's own page size."""
        tags: list[str] = []
        url: str | None = None
        params = {"n": page_size} if page_size else None
        seen: set[str] = set()
        while True:
            resp = self.request("GET", f"{repository}/tags/list", url=url, params=params if url is None else None)
            if resp.status_code == 404 and url is None:
                return []
            if resp.status_code != 200:
                raise RegistryError(f"GET tags of {repository} answered {resp.status_code}: {resp.text[:200]}")
            tags += json_object(resp, f"the tag list of {repository}").get("tags") or []
            url = next_page(resp, self.auth.scheme, self.auth.host, repository)
            if url is None:
                return sorted(set(tags))
            if url in seen:  # a registry that links a page to itself would loop forever
                raise RegistryError(f"the tag list of {repository} links back to page {url}")
            seen.add(url)
