"""Registry expiry: read what the repository holds, age its run tags by the run records,
delete what expiry.py decides, and report every deletion the registry refused.

Every tag's digest is read from its manifest's headers (so an image a kept tag points at
is never deleted), but only this config's run tags are looked into any further: a foreign
image with odd labels, a config blob that is not JSON or an empty index cannot stop the
task (M8). Whatever cannot be read is kept and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from include.nightly_ci.errors import RegistryError
from include.nightly_ci.names import LABEL_CREATED
from include.nightly_ci.plan import Registry
from include.nightly_ci.retention.expiry import (
    DigestDecision,
    TagDecision,
    TagFacts,
    TagRules,
    decide_framework_digests,
    decide_tags,
)
from include.nightly_ci.retention.facts import PushFacts, aware

if TYPE_CHECKING:
    from include.nightly_ci.images.registries import RegistryClient

log = logging.getLogger(__name__)
ECR_BATCH = 100  # batch_delete_image takes at most 100 image ids


def _created(client: RegistryClient, repository: str, tag: str) -> tuple[datetime | None, str]:
    """TAG's created label (the run's build time) and "created label", or None and why not."""
    try:
        image = client.image(repository, tag)
    except RegistryError as exc:
        return None, f"unreadable image: {exc}"
    if image is None:
        return None, "gone while listing"
    stamp = image.labels.get(LABEL_CREATED)
    if not stamp:
        return None, f"no push record and no {LABEL_CREATED} label"
    try:
        return aware(stamp), "created label"
    except ValueError:
        return None, f"its {LABEL_CREATED} label {stamp!r} is not an ISO time"


def tag_facts(client: RegistryClient, repository: str, rules: TagRules, pushed: PushFacts) -> dict[str, TagFacts]:
    """Every tag of REPOSITORY with its digest; run tags with their age too: the push
    record's time, else the created label (never the night: a backfill is pushed late)."""
    facts = {}
    for tag in client.tags(repository):
        try:
            digest = client.digest(repository, tag)
        except RegistryError as exc:
            facts[tag] = TagFacts("", None, str(exc))
            continue
        if digest is None:
            continue  # deleted while we listed
        if not rules.is_run_tag(tag):
            facts[tag] = TagFacts(digest)
        elif tag in pushed.run_tags:
            facts[tag] = TagFacts(digest, pushed.run_tags[tag], "pushed")
        else:
            age, source = _created(client, repository, tag)
            facts[tag] = TagFacts(digest, age, source)
    return facts


@dataclass(frozen=True)
class Victim:
    """One thing to delete: a tag (ECR untags it) or a digest (a manifest DELETE)."""

    what: str  # for the log: "repo:tag" or "repo@digest"
    tag: str | None
    digest: str


def _delete_ecr(reg: Registry, victims: list[Victim]) -> dict[str, str]:
    """Untag (or delete by digest) on ECR; what it refused: what -> why. ECR answers a
    batch with the ids it deleted and, in the same 200 answer, those it did not."""
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook

    ecr = EcrHook(aws_conn_id=reg.conn_id).conn
    kwargs = {"registryId": reg.registry_id} if reg.registry_id else {}
    refused = {}
    for start in range(0, len(victims), ECR_BATCH):
        batch = victims[start : start + ECR_BATCH]
        ids = [{"imageTag": v.tag} if v.tag else {"imageDigest": v.digest} for v in batch]
        resp = ecr.batch_delete_image(repositoryName=reg.repository, imageIds=ids, **kwargs)
        for failure in resp.get("failures") or []:
            image_id = failure.get("imageId") or {}
            victim = next(
                (
                    v
                    for v in batch
                    if (v.tag and v.tag == image_id.get("imageTag")) or v.digest == image_id.get("imageDigest")
                ),
                None,
            )
            what = victim.what if victim else str(image_id)
            refused[what] = f"{failure.get('failureCode')}: {failure.get('failureReason')}"
    return refused


def _delete_by_digest(reg: Registry, client: RegistryClient | None, victims: list[Victim]) -> dict[str, str]:
    """Manifest DELETEs (every tag on the manifest goes with it); what was refused: what -> why."""
    assert client is not None, f"registry {reg.name!r} deletes through its HTTP API: a client is needed"
    refused = {}
    for v in victims:
        try:
            resp = client.request("DELETE", f"{reg.repository}/manifests/{v.digest}")
        except RegistryError as exc:
            refused[v.what] = str(exc)
            continue
        if resp.status_code not in (202, 404):  # 404: gone with an earlier tag of the same image
            refused[v.what] = f"DELETE {reg.repository}@{v.digest} answered {resp.status_code}: {resp.text[:200]}"
    return refused


def delete(reg: Registry, client: RegistryClient | None, victims: list[Victim]) -> dict[str, str]:
    """VICTIMS deleted from REG; those the registry refused: what -> why. CLIENT: the
    registry's HTTP API (ECR's own API needs none)."""
    if not victims:
        return {}
    if reg.kind == "ecr" and not reg.host_override:
        return _delete_ecr(reg, victims)
    return _delete_by_digest(reg, client, victims)


def _existing(client: RegistryClient, repository: str, digests: dict[str, datetime]) -> dict[str, datetime]:
    """The DIGESTS the registry still holds: one deleted on an earlier day is not asked again."""
    found = {}
    for digest, when in digests.items():
        try:
            if client.digest(repository, digest) is not None:
                found[digest] = when
        except RegistryError as exc:
            log.info("keep %s@%s: unreadable (%s)", repository, digest[:19], exc)
    return found


def _report(reg: Registry, decisions: list[TagDecision], digests: list[DigestDecision], dry_run: bool) -> list[Victim]:
    """Log every decision (what, why); the victims."""
    where = f"{reg.name}/{reg.repository}"
    victims = []
    for d in decisions:
        if d.delete:
            victims.append(Victim(f"{where}:{d.tag}", d.tag, d.digest))
        log.info("%s %s:%s (%s): %s", _verb(d.delete, dry_run), where, d.tag, d.digest[:19] or "?", d.reason)
    for g in digests:
        if g.delete:
            victims.append(Victim(f"{where}@{g.digest}", None, g.digest))
        log.info("%s %s@%s: %s", _verb(g.delete, dry_run), where, g.digest, g.reason)
    return victims


def _verb(delete: bool, dry_run: bool) -> str:
    return ("would delete" if dry_run else "deleting") if delete else "keep"


def expire_registry(
    reg: Registry, rules: TagRules, pushed: PushFacts, keep: timedelta, now: datetime, dry_run: bool
) -> list[TagDecision | DigestDecision]:
    """Expire REG's run tags and superseded framework images; every decision logged. The
    deletions the registry refused are logged, the rest still tried, then RegistryError."""
    from include.nightly_ci.images.registries import RegistryClient, registry_auth

    client = RegistryClient(registry_auth(reg))
    facts = tag_facts(client, reg.repository, rules, pushed)
    ecr_api = reg.kind == "ecr" and not reg.host_override  # untags by tag: no manifest DELETE
    decisions = decide_tags(rules, facts, now, keep, by_digest=not ecr_api)
    held = {f.digest: t for t, f in sorted(facts.items(), reverse=True) if f.digest}
    unreadable = [t for t, f in facts.items() if not f.digest]
    # Framework images no tag holds any more, and that the registry still has: one deleted
    # on an earlier day stays in the push records until they expire, and is not asked again.
    superseded = _existing(client, reg.repository, {d: w for d, w in pushed.framework_digests.items() if d not in held})
    still_held = {d: w for d, w in pushed.framework_digests.items() if d in held}
    digests = decide_framework_digests(still_held | superseded, held, now, keep, unreadable)
    victims = _report(reg, decisions, digests, dry_run)
    refused = {} if dry_run else delete(reg, client, victims)
    for v in victims:
        if not dry_run:
            log.info("%s %s", f"NOT deleted ({refused[v.what]}):" if v.what in refused else "deleted", v.what)
    log.info(
        "%s: %d of %d tags and %d superseded framework images %s; %d refused",
        reg.name,
        sum(d.delete for d in decisions),
        len(decisions),
        sum(g.delete for g in digests),
        "to delete (dry run)" if dry_run else "deleted",
        len(refused),
    )
    if refused:
        raise RegistryError(
            f"registry {reg.name!r} refused {len(refused)} deletion(s): "
            + "; ".join(f"{what}: {why}" for what, why in sorted(refused.items())[:10])
        )
    return [*decisions, *digests]
