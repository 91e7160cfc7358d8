"""Promoting an image a build pushed (by digest) to a tag, in its own registry or another:
the registry is the only handoff between tasks, and no engine takes part.

- Within ECR (the same repository, reached through EcrHook): `put_image` with the
  manifest `batch_get_image` returns, so no byte of an image moves.
- Within any other registry's repository: the manifest is PUT again under the tag.
- Into another registry or repository: every blob the target lacks is streamed across
  (config and layers), then the manifest is PUT, byte for byte: the digest is the same.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from include.nightly_ci.errors import RegistryError
from include.nightly_ci.images.registries import Manifest, RegistryClient
from include.nightly_ci.plan import Registry

log = logging.getLogger(__name__)
LineSink = Callable[[str], None]


def uses_ecr_api(registry: Registry) -> bool:
    """A real ECR registry (not a stand-in reached through host_override)."""
    return registry.kind == "ecr" and not registry.host_override


def ecr_retag(registry: Registry, digest: str, tag: str) -> str:
    """TAG on the image DIGEST of an ECR repository, by its manifest (EcrHook's API)."""
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook

    ecr = EcrHook(aws_conn_id=registry.conn_id).conn
    ids = {"registryId": registry.registry_id} if registry.registry_id else {}
    found = ecr.batch_get_image(repositoryName=registry.repository, imageIds=[{"imageDigest": digest}], **ids)
    if not found.get("images"):
        raise RegistryError(f"ECR repository {registry.repository} has no image {digest}: {found.get('failures')}")
    image = found["images"][0]
    # ImageAlreadyExists: the tag already holds exactly this manifest (a re-run).
    with contextlib.suppress(ecr.exceptions.ImageAlreadyExistsException):
        ecr.put_image(
            repositoryName=registry.repository,
            imageManifest=image["imageManifest"],
            imageManifestMediaType=image.get("imageManifestMediaType", ""),
            imageTag=tag,
            **ids,
        )
    return digest


def copy_image(
    source: RegistryClient, source_repo: str, digest: str, target: RegistryClient, target_repo: str, tag: str,
    sink: LineSink,
) -> str:  # fmt: skip
    """TAG in TARGET's TARGET_REPO on the image DIGEST of SOURCE's SOURCE_REPO, copying the
    blobs TARGET lacks; the digest the target reports (the same: the bytes are)."""
    manifest = bring_content(source, source_repo, digest, target, target_repo, sink)
    same = source.auth.host == target.auth.host and source_repo == target_repo
    stored = target.put_manifest(target_repo, tag, manifest)
    if stored != digest:
        raise RegistryError(f"{target.auth.host}/{target_repo}:{tag} holds {stored}, not the image {digest}")
    sink(f"{target.auth.host}/{target_repo}:{tag} -> {digest}" + ("" if same else " (copied)"))
    return stored


def bring_content(
    source: RegistryClient, source_repo: str, digest: str, target: RegistryClient, target_repo: str,
    sink: LineSink,
) -> Manifest:  # fmt: skip
    """The image DIGEST's manifest, with everything it refers to already in the target (so
    that tagging it there is one manifest PUT)."""
    manifest = source.manifest(source_repo, digest)
    if source.auth.host != target.auth.host or source_repo != target_repo:
        _copy_content(source, source_repo, manifest, target, target_repo, sink)
    return manifest


def _copy_content(
    source: RegistryClient, source_repo: str, manifest: Manifest, target: RegistryClient, target_repo: str,
    sink: LineSink,
) -> None:  # fmt: skip
    """Everything MANIFEST refers to, into the target: child manifests of an index by
    digest, blobs of an image manifest."""
    for child in manifest.children:
        child_manifest = source.manifest(source_repo, child)
        _copy_content(source, source_repo, child_manifest, target, target_repo, sink)
        target.put_manifest(target_repo, child, child_manifest)
    if manifest.children:
        return
    copied = 0
    for blob, _ in manifest.blobs():
        if not target.has_blob(target_repo, blob):
            copied += source.copy_blob_to(target, source_repo, blob, target_repo)
    sink(f"copied {copied} bytes of blobs to {target.auth.host}/{target_repo}")


def compressed_size(client: RegistryClient, repository: str, digest: str) -> int:
    """What the image DIGEST weighs in the registry: its config and compressed layers."""
    manifest = client.manifest(repository, digest)
    if manifest.children:
        return sum(compressed_size(client, repository, child) for child in manifest.children)
    return sum(size for _, size in manifest.blobs())
