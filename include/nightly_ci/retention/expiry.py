"""Expiry of artifacts and run-specific image tags (the `nightly_ci_retention` DAG).

Only run tags (`nightly-{framework}-{arch}-run-{run_id}`) are ever deleted from a
registry; moving tags and framework cache tags are never touched, and neither is an
image that a kept tag still points at.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.names import LABEL_CREATED, LABEL_LOGICAL_DATE
from include.nightly_ci.plan import Plan, Registry

if TYPE_CHECKING:
    from include.nightly_ci.images.registries import RegistryClient

log = logging.getLogger(__name__)


def expired(items: Iterable[tuple[str, datetime]], now: datetime, keep: timedelta) -> list[str]:
    """The names in ITEMS strictly older than NOW - KEEP, oldest first."""
    cutoff = now - keep
    return [name for name, when in sorted(items, key=lambda i: i[1]) if when < cutoff]


def run_tag_regex(plan: Plan) -> re.Pattern[str]:
    """Matches the run tags of every cell of PLAN, and nothing else."""
    alternatives = []
    for cell in plan.cells:
        prefix, _, suffix = cell.run_tag_pattern.partition("{run_id}")
        fill = {"framework": cell.framework, "arch": cell.arch}
        alternatives.append(re.escape(prefix.format(**fill)) + r"[A-Za-z0-9_.-]+" + re.escape(suffix.format(**fill)))
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


def moving_tags(plan: Plan) -> set[str]:
    return {t for cell in plan.cells for t in (cell.nightly_tag, cell.framework_tag)}


@dataclass(frozen=True)
class TagRules:
    """Which tags of a registry are a config's run tags, and which are its moving tags."""

    run_tags: str  # a regex matching every cell's run tags
    moving_tags: frozenset[str]

    @classmethod
    def of(cls, plan: Plan) -> TagRules:
        return cls(run_tag_regex(plan).pattern, frozenset(moving_tags(plan)))


@dataclass(frozen=True)
class TagDecision:
    tag: str
    digest: str
    night: datetime | None
    delete: bool
    reason: str


def decide_tags(
    rules: TagRules, tags: dict[str, tuple[str, datetime | None]], now: datetime, keep: timedelta
) -> list[TagDecision]:
    """For every tag (tag -> (digest, night)): delete it or keep it, and why."""
    runs = re.compile(rules.run_tags)
    protected = rules.moving_tags
    stale = set(expired(((t, n) for t, (_, n) in tags.items() if n and runs.fullmatch(t)), now, keep))
    kept_digests = {d for t, (d, _) in tags.items() if t not in stale}
    decisions = []
    for tag, (digest, night) in sorted(tags.items()):
        if tag in protected:
            decisions.append(TagDecision(tag, digest, night, False, "a moving tag"))
        elif not runs.fullmatch(tag):
            decisions.append(TagDecision(tag, digest, night, False, "not a run tag of this config"))
        elif night is None:
            decisions.append(TagDecision(tag, digest, night, False, "the image records no night"))
        elif tag not in stale:
            decisions.append(TagDecision(tag, digest, night, False, "within retention"))
        elif digest in kept_digests:
            decisions.append(TagDecision(tag, digest, night, False, "expired, but a kept tag points at the same image"))
        else:
            decisions.append(TagDecision(tag, digest, night, True, f"older than {keep.days} days"))
    return decisions


def _night(labels: dict[str, str]) -> datetime | None:
    stamp = labels.get(LABEL_LOGICAL_DATE) or labels.get(LABEL_CREATED)
    return datetime.fromisoformat(stamp) if stamp else None


def registry_tags(client: RegistryClient, repository: str) -> dict[str, tuple[str, datetime | None]]:
    tags = {}
    for tag in client.tags(repository):
        image = client.image(repository, tag)
        if image is not None:
            tags[tag] = (image.digest, _night(image.labels))
    return tags


def delete_tag(reg: Registry, client: RegistryClient, decision: TagDecision) -> None:
    """Untag on ECR (its API deletes by tag); elsewhere delete the manifest by digest,
    which decide_tags allows only when no kept tag shares it."""
    if reg.kind == "ecr" and not reg.host_override:
        from airflow.providers.amazon.aws.hooks.ecr import EcrHook

        kwargs = {"registryId": reg.registry_id} if reg.registry_id else {}
        EcrHook(aws_conn_id=reg.conn_id).conn.batch_delete_image(
            repositoryName=reg.repository, imageIds=[{"imageTag": decision.tag}], **kwargs
        )
        return
    resp = client.request("DELETE", f"{reg.repository}/manifests/{decision.digest}")
    if resp.status_code not in (202, 404):
        from include.nightly_ci.errors import RegistryError

        raise RegistryError(f"DELETE {reg.repository}@{decision.digest} answered {resp.status_code}: {resp.text[:200]}")


def expire_registry(reg: Registry, rules: TagRules, keep: timedelta, now: datetime, dry_run: bool) -> list[TagDecision]:
    from include.nightly_ci.images.registries import RegistryClient, registry_auth

    client = RegistryClient(registry_auth(reg))
    decisions = decide_tags(rules, registry_tags(client, reg.repository), now, keep)
    for d in decisions:
        if d.delete:
            if not dry_run:
                delete_tag(reg, client, d)
            log.info(
                "%s %s/%s:%s (%s, night %s)",
                "would delete" if dry_run else "deleted",
                reg.name,
                reg.repository,
                d.tag,
                d.digest[:19],
                d.night,
            )
        else:
            log.debug("keep %s: %s", d.tag, d.reason)
    kept = sum(not d.delete for d in decisions)
    log.info(
        "%s: %d run tags %s, %d tags kept",
        reg.name,
        len(decisions) - kept,
        "to delete (dry run)" if dry_run else "deleted",
        kept,
    )
    return decisions


def expire_artifacts(store: ArtifactStore, keep: timedelta, now: datetime, dry_run: bool) -> list[str]:
    """Delete every artifact file older than KEEP; the deleted paths."""
    root = store.root()
    if not root.exists():
        log.info("artifact store %s is empty", root)
        return []
    files = [(p, datetime.fromtimestamp(p.stat().st_mtime, tz=now.tzinfo)) for p in root.rglob("*") if p.is_file()]
    stale = set(expired(((str(p), when) for p, when in files), now, keep))
    for path, _ in files:
        if str(path) in stale:
            if not dry_run:
                path.unlink()
            log.info("%s %s", "would delete" if dry_run else "deleted", path)
    log.info("artifacts: %d of %d files %s", len(stale), len(files), "to delete (dry run)" if dry_run else "deleted")
    return sorted(stale)
