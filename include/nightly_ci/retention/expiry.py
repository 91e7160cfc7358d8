"""What expires from a registry, decided from facts (pure: no registry, no store).

Only run tags (`nightly-{framework}-{arch}-run-{run_id}`, and the `-build-{image}` tags a
build pushes with them) and the culprit finder's candidate tags
(`culprit-{framework}-{arch}-{commit12}-build-runtime`) are ever candidates; moving tags,
framework cache tags and any tag of somebody else are never examined. A run tag's age is
its push time from the push records, else the image's created label (the run's build
time), never the night it was built for: a backfill of an old night is as young as its
push (H2). An image a kept tag
still points at is never deleted. A framework image that no tag holds any more (its moving
tag moved on) goes once its last push is older than the keep days (M8).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from include.nightly_ci.names import BUILD_TAG_SUFFIX, RUNTIME
from include.nightly_ci.plan import Plan
from include.nightly_ci.plan.culprit import candidate_tag_pattern, culprit_dag_id


def run_dag_ids(plan: Plan) -> tuple[str, ...]:
    """The DAGs whose run folders (and push records) retention reads and expires: the
    nightly's and its culprit finder's, whose candidate builds and test runs write their own."""
    return (plan.dag_id, culprit_dag_id(plan))


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


# A commit the culprit finder's tag pattern is made for, to split the pattern around it.
_COMMIT_SLOT = "0" * 40


def candidate_tag_regex(plan: Plan) -> re.Pattern[str]:
    """Matches the tags the culprit finder's candidate builds push (one per candidate commit
    and cell, the runtime image only: build/candidate.py), for every cell of PLAN."""
    pattern = candidate_tag_pattern(_COMMIT_SLOT)
    prefix, found, suffix = pattern.partition(_COMMIT_SLOT[:12])
    assert found, f"candidate tag pattern {pattern!r} holds no 12-digit commit: retention cannot match its tags"
    suffix += BUILD_TAG_SUFFIX.format(image=RUNTIME)
    alternatives = []
    for cell in plan.cells:
        fill = {"framework": cell.framework, "arch": cell.arch}
        alternatives.append(re.escape(prefix.format(**fill)) + r"[0-9a-f]{7,12}" + re.escape(suffix.format(**fill)))
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


def moving_tags(plan: Plan) -> set[str]:
    return {t for cell in plan.cells for t in (cell.nightly_tag, cell.framework_tag)}


@dataclass(frozen=True)
class TagRules:
    """Which tags of a registry are a config's run tags (the nightly's run tags and its
    culprit finder's candidate tags: they expire), and which are its moving tags."""

    run_tags: str  # a regex matching every cell's run tags and candidate tags
    moving_tags: frozenset[str]

    @classmethod
    def of(cls, plan: Plan) -> TagRules:
        runs, candidates = run_tag_regex(plan).pattern, candidate_tag_regex(plan).pattern
        return cls(f"{runs}|{candidates}", frozenset(moving_tags(plan)))

    def is_run_tag(self, tag: str) -> bool:
        return tag not in self.moving_tags and re.fullmatch(self.run_tags, tag) is not None


@dataclass(frozen=True)
class TagFacts:
    """What is known of one tag: its digest ("" if unreadable) and, for a run tag, its age."""

    digest: str
    age: datetime | None = None  # None: unknown (SOURCE says why)
    source: str = ""  # "pushed" (a push record), "created label", or why there is no age


@dataclass(frozen=True)
class TagDecision:
    tag: str
    digest: str
    age: datetime | None
    delete: bool
    reason: str


def decide_tags(
    rules: TagRules, tags: Mapping[str, TagFacts], now: datetime, keep: timedelta, *, by_digest: bool = True
) -> list[TagDecision]:
    """For every tag: delete it or keep it, and why. BY_DIGEST: the registry deletes a tag by
    deleting its manifest (every tag on it goes too), so a tag whose digest is unknown could
    be one of those: then nothing is deleted by digest."""
    stale = set(expired(((t, f.age) for t, f in tags.items() if f.age and f.digest and rules.is_run_tag(t)), now, keep))
    kept_digests = {f.digest for t, f in tags.items() if t not in stale}
    unreadable = sorted(t for t, f in tags.items() if not f.digest)
    decisions = []
    for tag, f in sorted(tags.items()):
        if tag in rules.moving_tags:
            why = "a moving tag"
        elif not rules.is_run_tag(tag):
            why = "not a run tag of this config (not examined)"
        elif not f.digest:
            why = f"its manifest is unreadable ({f.source})"
        elif f.age is None:
            why = f"no age known: {f.source}"
        elif tag not in stale:
            why = f"within {keep.days} days ({f.source} {f.age.isoformat()})"
        elif f.digest in kept_digests:
            why = "expired, but a kept tag points at the same image"
        elif by_digest and unreadable:
            why = f"expired, but tag(s) {', '.join(unreadable[:5])} could not be read and may hold the same image"
        else:
            decisions.append(
                TagDecision(tag, f.digest, f.age, True, f"older than {keep.days} days ({f.source} {f.age.isoformat()})")
            )
            continue
        decisions.append(TagDecision(tag, f.digest, f.age, False, why))
    return decisions


@dataclass(frozen=True)
class DigestDecision:
    digest: str
    pushed: datetime
    delete: bool
    reason: str


def decide_framework_digests(
    pushed: Mapping[str, datetime],
    held: Mapping[str, str],
    now: datetime,
    keep: timedelta,
    unreadable: Iterable[str] = (),
) -> list[DigestDecision]:
    """The framework images PUSHED (digest -> last push time, from the push records): each
    deleted when no tag holds it (HELD: digest -> a tag holding it) and its last push is
    older than KEEP. The caller passes only digests the registry still has."""
    cutoff = now - keep
    unknown = sorted(unreadable)
    decisions = []
    for digest, when in sorted(pushed.items()):
        if digest in held:
            why = f"tag {held[digest]} still holds it"
        elif when >= cutoff:
            why = f"superseded, but pushed within {keep.days} days ({when.isoformat()})"
        elif unknown:
            why = f"superseded, but tag(s) {', '.join(unknown[:5])} could not be read and may hold it"
        else:
            decisions.append(
                DigestDecision(digest, when, True, f"a superseded framework image, last pushed {when.isoformat()}")
            )
            continue
        decisions.append(DigestDecision(digest, when, False, why))
    return decisions
