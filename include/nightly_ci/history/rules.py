"""The rules over a night and its history, pure: flaky or regression, what the quarantine
mutes, when an entry is added, released or expired, and test-count drift.

A failed case is FLAKY when any rerun of it in the same image passed: the same bytes
both passed and failed, so the commit range cannot be what broke it. Otherwise it is a
REGRESSION when it passed (or did not exist) on the previous comparable night, and
STILL_FAILING when it failed then too.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime

from include.nightly_ci.history.records import (
    BAD,
    FLAKY,
    FROM_CONFIG,
    FROM_FLAKES,
    PASSED,
    REGRESSION,
    STILL_FAILING,
    QuarantineEntry,
)

Key = tuple[str, str, str]  # (cell, suite, test id)


def verdict(reruns: tuple[str, ...], previous: str | None) -> str:
    """What one failed case is, from its reruns' outcomes and its previous night's outcome."""
    if PASSED in reruns:
        return FLAKY
    if previous in BAD:
        return STILL_FAILING
    return REGRESSION


def newly_failing(failed: Iterable[Key], previous: Mapping[Key, str]) -> list[Key]:
    """The failed cases that did not fail on their previous comparable night: the ones
    rerun tonight (a case failing night after night is known already)."""
    return sorted(k for k in failed if previous.get(k) not in BAD)


def night_date(night: str) -> date:
    return datetime.fromisoformat(night).date()


def is_active(entry: QuarantineEntry, night: str) -> bool:
    """Whether ENTRY mutes on NIGHT: not released, and not past its expiry."""
    return entry.released is None and (entry.expires is None or night_date(night) <= entry.expires)


def muting(test_id: str, entries: Iterable[QuarantineEntry], night: str) -> QuarantineEntry | None:
    """The first active entry whose pattern matches TEST_ID on NIGHT."""
    return next((e for e in entries if is_active(e, night) and fnmatch.fnmatchcase(test_id, e.pattern)), None)


@dataclass(frozen=True)
class QuarantineChanges:
    """What tonight does to the quarantine; every change is told, none is silent."""

    added: tuple[QuarantineEntry, ...] = ()
    released: tuple[QuarantineEntry, ...] = ()
    expired: tuple[QuarantineEntry, ...] = ()  # past expiry and still listed: their owners are pinged

    @property
    def any(self) -> bool:
        return bool(self.added or self.released or self.expired)


def _same_config_entry(a: QuarantineEntry, b: QuarantineEntry) -> bool:
    # A config entry is itself until its pattern or expiry is edited (an edit renews it).
    return a.pattern == b.pattern and a.expires == b.expires


def config_changes(
    configured: Iterable[QuarantineEntry], stored: Iterable[QuarantineEntry], night: str
) -> QuarantineChanges:
    """Config entries the store lacks are added (unless released before, unedited); stored
    config entries no longer in the config are released, saying so."""
    configured, stored = list(configured), [s for s in stored if s.origin == FROM_CONFIG]
    added = tuple(
        replace(c, origin=FROM_CONFIG, added=night)
        for c in configured
        if not any(_same_config_entry(c, s) for s in stored)
    )
    gone = tuple(
        replace(s, released=night, released_why="removed from the config")
        for s in stored
        if s.released is None and not any(_same_config_entry(c, s) for c in configured)
    )
    expired = tuple(s for s in stored if s.released is None and s.expires is not None and night_date(night) > s.expires)
    expired += tuple(c for c in added if c.expires is not None and night_date(night) > c.expires)
    return QuarantineChanges(added=added, released=gone, expired=expired)


def flaky_entries(
    flaky_counts: Mapping[str, int],
    active: Iterable[QuarantineEntry],
    *,
    nights: int,
    window: int,
    owner: str,
    night: str,
) -> tuple[QuarantineEntry, ...]:
    """An automatic entry for each case flaky on NIGHTS of the last WINDOW nights that no
    active entry covers yet."""
    active = list(active)
    return tuple(
        QuarantineEntry(
            pattern=test,
            owner=owner,
            reason=f"flaky on {count} of the last {window} nights (passed a rerun of the image it failed in)",
            origin=FROM_FLAKES,
            added=night,
        )
        for test, count in sorted(flaky_counts.items())
        if count >= nights and muting(test, active, night) is None
    )


def clean_releases(
    active: Iterable[QuarantineEntry], clean_counts: Mapping[str, int], *, after: int, night: str
) -> tuple[QuarantineEntry, ...]:
    """Entries whose tests ran clean on AFTER nights in a row, released. A config entry
    released this way stays released until it is edited; the owner is told to remove it."""
    return tuple(
        replace(e, released=night, released_why=f"{clean_counts[e.pattern]} clean nights in a row")
        for e in active
        if e.released is None and clean_counts.get(e.pattern, 0) >= after
    )


@dataclass(frozen=True)
class Drift:
    """A suite that ran fewer tests than on its previous comparable night."""

    task_id: str
    before: int
    now: int

    @property
    def share(self) -> float:
        return (self.before - self.now) / self.before

    def __str__(self) -> str:
        return f"{self.task_id}: {self.now} tests, {self.before} the night before (-{self.share:.0%})"


def drift(now: Mapping[str, int], before: Mapping[str, int], share: float) -> tuple[Drift, ...]:
    """Suites (by task id) whose count fell by more than SHARE of the night before's."""
    return tuple(
        Drift(task_id, before[task_id], count)
        for task_id, count in sorted(now.items())
        if before.get(task_id) and (before[task_id] - count) / before[task_id] > share
    )
