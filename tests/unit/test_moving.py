"""The moving tags' rules (H1): who may move them, and the compare-and-set around the write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from include.nightly_ci.images.moving import Held, Rules, TagIO, move_forward
from include.nightly_ci.names import LABEL_LOGICAL_DATE, LABEL_REVISION
from include.nightly_ci.plan import publishes

NOW = datetime(2026, 11, 29, 9, tzinfo=UTC)
NIGHT = datetime(2026, 11, 29, 8, tzinfo=UTC)


def rules(mine: Held, ancestors: set[tuple[str, str]] = frozenset(), unknown: bool = False) -> Rules:  # type: ignore[assignment]
    def is_ancestor(a: str, b: str) -> bool | None:
        return None if unknown else (a, b) in ancestors

    return Rules(mine, NOW, is_ancestor, settle_seconds=0.0, write_bound_seconds=5.0)


@pytest.mark.parametrize(
    ("run_type", "conf", "moves"),
    [
        ("scheduled", {}, True),
        ("backfill", None, True),
        ("scheduled", {"publish": False}, False),
        ("backfill", {"publish": "false"}, False),
        ("manual", {}, False),  # the hijack: a manual run of a branch took nightly-* by default
        ("manual", {"git_ref": "feature"}, False),
        ("manual", {"publish": True}, True),
        ("asset_triggered", None, False),
    ],
)
def test_who_publishes_the_moving_tags(run_type, conf, moves):
    assert publishes(run_type, conf) is moves


def test_a_run_dated_in_the_future_never_moves_a_moving_tag():
    mine = Held("sha256:new", datetime(2030, 1, 1, tzinfo=UTC), "c2")
    assert "in the future" in str(rules(mine).refusal(None))
    assert "in the future" in str(rules(mine).refusal(Held("sha256:old", NIGHT - timedelta(days=1), "c1")))


def test_a_tag_frozen_by_a_future_night_is_taken_back_by_the_next_nightly():
    frozen = Held("sha256:2030", datetime(2030, 1, 1, tzinfo=UTC), "c9")
    assert rules(Held("sha256:tonight", NIGHT, "c2")).refusal(frozen) is None


def test_forward_only_by_night():
    mine = Held("sha256:mine", NIGHT - timedelta(days=3), "c1")  # a backfill
    why = rules(mine).refusal(Held("sha256:last", NIGHT - timedelta(days=1), "c3"))
    assert why and "newer than this run's" in why
    assert rules(Held("sha256:m", NIGHT, "c3")).refusal(Held("sha256:l", NIGHT - timedelta(days=1), "c2")) is None
    assert rules(Held("sha256:m", NIGHT, "c3")).refusal(Held("sha256:l", NIGHT, "c2")) is None  # a re-run


def test_never_back_to_an_ancestor_of_the_commit_it_holds():
    """A manual run (publish on) of a 3-day-old commit moved nightly-* back to it."""
    mine = Held("sha256:old-commit", NIGHT, "c0")
    held = Held("sha256:last-night", NIGHT - timedelta(days=1), "c3")
    why = rules(mine, {("c0", "c3")}).refusal(held)
    assert why and "is an ancestor of c3" in why
    assert rules(mine, set()).refusal(held) is None  # another line of history: newer night wins
    unknown = rules(mine, unknown=True).refusal(held)
    assert unknown and "could not tell" in unknown


def test_labels_that_are_not_a_night_do_not_block():
    held = Held.of_labels("sha256:x", {LABEL_LOGICAL_DATE: "2025-06-01 12:00:00 +0000 UTC", LABEL_REVISION: "c"})
    assert held.night is None and held.revision == "c"
    assert Held.of_labels("sha256:y", {LABEL_LOGICAL_DATE: "2026-11-28T08:00:00"}).night == NIGHT - timedelta(days=1)


class Slot:
    """A tag in memory (the integration test races a real registry)."""

    def __init__(self, held: Held | None):
        self.held = held

    def io(self, mine: Held, before_write=lambda: None) -> TagIO:
        def write() -> str:
            before_write()
            self.held = mine
            return mine.digest

        return TagIO("nightly-x", lambda: self.held, write)


def test_an_older_write_landing_after_the_check_is_written_over_on_read_back():
    old_night, new_night = Held("sha256:A", NIGHT - timedelta(days=1), "a"), Held("sha256:B", NIGHT, "b")
    slot = Slot(Held("sha256:X", NIGHT - timedelta(days=2), "x"))
    # B checks and writes; an older run A, which checked before B's write, lands over it
    # right after: B's read-back sees A and writes B again.
    io = slot.io(new_night)
    landed = {"done": False}

    def sleep(_: float) -> None:
        if not landed["done"]:
            landed["done"] = True
            slot.held = old_night

    outcome = move_forward(io, rules(new_night), sleep=sleep)
    assert outcome.moved and outcome.rounds == 2 and slot.held == new_night


def test_a_write_slower_than_its_bound_is_decided_again():
    mine = Held("sha256:A", NIGHT - timedelta(days=1), "a")
    newer = Held("sha256:B", NIGHT, "b")
    slot = Slot(None)
    import time

    def slow_and_overtaken() -> None:
        slot.held = newer  # a newer run wrote meanwhile
        time.sleep(0.05)

    r = Rules(mine, NOW, lambda a, b: False, settle_seconds=0.0, write_bound_seconds=0.01)
    first = {"n": 0}

    def write() -> str:
        first["n"] += 1
        if first["n"] == 1:
            slow_and_overtaken()
            return mine.digest  # our (slow) write landed before the newer one, say
        slot.held = mine
        return mine.digest

    outcome = move_forward(TagIO("t", lambda: slot.held, write), r, sleep=lambda _: None)
    assert not outcome.moved and "newer than this run's" in outcome.reason and slot.held == newer
