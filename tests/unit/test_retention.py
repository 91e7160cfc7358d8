"""Retention picks exactly what is older than the cutoff, and never a moving tag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from include.nightly_ci.plan import load_plan
from include.nightly_ci.retention.expiry import TagRules, decide_tags, expired, run_tag_regex

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
WEEK = timedelta(days=7)


def test_expired_is_strictly_older_than_the_cutoff():
    cutoff = NOW - WEEK
    items = [
        ("just-older", cutoff - timedelta(seconds=1)),
        ("at-cutoff", cutoff),
        ("newer", cutoff + timedelta(seconds=1)),
        ("ancient", NOW - timedelta(days=300)),
    ]
    assert expired(items, NOW, WEEK) == ["ancient", "just-older"]


def test_run_tags_are_recognised_and_nothing_else():
    runs = run_tag_regex(load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml")))
    assert runs.fullmatch("nightly-vllm-amd64-run-scheduled-20261120T080000Z")
    assert runs.fullmatch("nightly-trtllm-arm64-run-manual-x-1a2b3c4d")
    # What a build pushed for its push tasks: run-scoped, it goes with the run's tags.
    from include.nightly_ci.names import build_tag

    assert runs.fullmatch(build_tag("nightly-{framework}-{arch}-run-{run_id}", "vllm", "amd64", "r1", "framework"))
    for tag in (
        "nightly-vllm-amd64",
        "main-vllm-framework-amd64",
        "nightly-tensorflow-amd64-run-x",
        "latest",
        "vllm-amd64-cache",  # the registry cache where a builder exports one: kept
    ):
        assert not runs.fullmatch(tag)


def test_decisions():
    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    old, new = NOW - timedelta(days=10), NOW - timedelta(days=1)
    tags = {
        "nightly-vllm-amd64": ("sha256:shared", old),  # moving, and still on an old night
        "main-vllm-framework-amd64": ("sha256:fw", old),
        "nightly-vllm-amd64-run-a": ("sha256:shared", old),  # expired, but the moving tag holds its image
        "nightly-vllm-amd64-run-b": ("sha256:b", old),  # expired: goes
        "nightly-vllm-amd64-run-c": ("sha256:c", new),  # recent
        "nightly-vllm-amd64-run-d": ("sha256:d", None),  # no night recorded: left alone
        "someone-elses-tag": ("sha256:e", old),
    }
    decisions = {d.tag: d for d in decide_tags(TagRules.of(plan), tags, NOW, WEEK)}
    assert [t for t, d in decisions.items() if d.delete] == ["nightly-vllm-amd64-run-b"]
    assert decisions["nightly-vllm-amd64"].reason == "a moving tag"
    assert decisions["main-vllm-framework-amd64"].reason == "a moving tag"
    assert "same image" in decisions["nightly-vllm-amd64-run-a"].reason
    assert decisions["nightly-vllm-amd64-run-c"].reason == "within retention"
    assert decisions["someone-elses-tag"].reason == "not a run tag of this config"
