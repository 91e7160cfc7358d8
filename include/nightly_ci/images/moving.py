"""Moving a moving tag (`nightly-*`, `main-*-framework-*`) forward only, as a
compare-and-set that two racing runs cannot get wrong (H1).

Registries have no conditional write, so the move is a protocol around one manifest PUT:

1. read what the tag holds, and decide: a newer night, or a commit this run's commit is an
   ancestor of, keeps it; a night in the future is never written, and one found on the
   tag is taken for a mistake, not for the newest;
2. read it again right before the write: anything changed, decide afresh;
3. write (one manifest PUT), then wait SETTLE seconds and read it back: an older night
   that landed over it in the meantime is written over again.

Why it holds: an older run can only land its write after this run's check if it read the
tag before this run's write, and its write then lands within one write's time of that
read. Every writer waits longer than that (SETTLE > the write's bound) before it reads
back, so the newer run sees the older write and puts its own back, and the older run, on
its own read-back, sees the newer night and stops. A write slower than its bound is
logged, and its tag decided afresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from include.nightly_ci.errors import RegistryError
from include.nightly_ci.names import LABEL_LOGICAL_DATE, LABEL_REVISION

log = logging.getLogger(__name__)

# Rounds of read, write, read back before giving up (only racing writers need more than one).
MAX_ROUNDS = 6


@dataclass(frozen=True)
class Held:
    """What a tag holds (or this run would put there): an image, its night and commit."""

    digest: str
    night: datetime | None
    revision: str | None

    @classmethod
    def of_labels(cls, digest: str, labels: dict[str, str]) -> Held:
        stamp = labels.get(LABEL_LOGICAL_DATE)
        try:
            night = datetime.fromisoformat(stamp) if stamp else None
        except ValueError:  # somebody else's label: no night, so it does not block
            night = None
        if night is not None and night.tzinfo is None:
            night = night.replace(tzinfo=UTC)
        return cls(digest, night, labels.get(LABEL_REVISION))


@dataclass(frozen=True)
class Move:
    """How a move ended: whether the tag holds this run's image, and why."""

    tag: str
    moved: bool
    reason: str
    rounds: int = 1


@dataclass(frozen=True)
class TagIO:
    """How the protocol reads and writes one tag (the registry API, or ECR's)."""

    tag: str
    read: Callable[[], Held | None]
    write: Callable[[], str]  # puts this run's image under the tag; the digest stored


@dataclass(frozen=True)
class Rules:
    """What decides a move: this run's image, the time, and a commit ancestry check
    (is_ancestor(a, b): a is an ancestor of b; None when it cannot be told)."""

    mine: Held
    now: datetime
    is_ancestor: Callable[[str, str], bool | None]
    settle_seconds: float
    write_bound_seconds: float

    def refusal(self, held: Held | None) -> str | None:
        """Why the tag must keep HELD, or None if this run may take it."""
        mine = self.mine
        if mine.night is not None and mine.night > self.now:
            return f"this run's night {mine.night.isoformat()} is in the future: a moving tag never moves to it"
        if held is None or held.digest == mine.digest or held.night is None:
            return None
        if held.night > self.now:
            log.warning(
                "The tag holds night %s, which is in the future: taken for a mistake, not for the newest",
                held.night.isoformat(),
            )
            return None
        if mine.night is not None and held.night > mine.night:
            return f"it holds night {held.night.isoformat()}, newer than this run's {mine.night.isoformat()}"
        if not (held.revision and mine.revision) or held.revision == mine.revision:
            return None
        behind = self.is_ancestor(mine.revision, held.revision)
        if behind is None:
            return f"git could not tell whether this run's commit {mine.revision[:12]} is behind {held.revision[:12]}"
        if behind:
            return f"this run's commit {mine.revision[:12]} is an ancestor of {held.revision[:12]}, which it holds"
        return None


def move_forward(io: TagIO, rules: Rules, *, sleep: Callable[[float], None] = time.sleep) -> Move:
    """Move IO's tag to this run's image if RULES allow it (see the module's doc)."""
    for rounds in range(1, MAX_ROUNDS + 1):
        first = io.read()
        why = rules.refusal(first)
        if why:
            return Move(io.tag, False, why, rounds)
        started = time.monotonic()  # the bound covers the re-check and the write
        if io.read() != first:
            log.info("%s changed while it was checked: deciding again", io.tag)
            continue
        stored = io.write()
        took = time.monotonic() - started
        if stored != rules.mine.digest:
            raise RegistryError(f"{io.tag} was written but holds {stored}, not {rules.mine.digest}")
        if took > rules.write_bound_seconds:
            log.warning(
                "Writing %s took %.1f s, over its %.1f s bound: deciding again",
                io.tag,
                took,
                rules.write_bound_seconds,
            )
            continue
        sleep(rules.settle_seconds)
        after = io.read()
        if after is not None and after.digest == rules.mine.digest:
            return Move(io.tag, True, "moved", rounds)
        why = rules.refusal(after)
        if why:  # a newer night landed meanwhile: it wins, as it should
            return Move(io.tag, False, f"a newer run took it meanwhile: {why}", rounds)
        log.warning("%s was written over by an older night meanwhile: writing it again", io.tag)
    return Move(io.tag, False, f"gave up after {MAX_ROUNDS} rounds of racing writers", MAX_ROUNDS)
