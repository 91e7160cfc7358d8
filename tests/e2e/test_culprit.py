"""The culprit finder on real builds and real test runs of the sample project, with a
planted culprit among N commits, a planted flaky test and a planted external failure.

Each search runs as the scheduler would run it (tests/services.py run_culprit): the first
run with its conf, then every run a step triggered, with the conf it was triggered with.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dev.sample_repo import BROKEN_TEST, add_commits, add_flaky_marker, make_repo, nightly_history
from include.nightly_ci.culprit.operators import search_run_id
from include.nightly_ci.history import findings
from include.nightly_ci.history.store import HistoryStore
from tests.services import run_culprit, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FLAKY = "tests.unit.test_flaky::test_flaky_on_every_other_run"


def setup(tmp_path, *, flaky: bool = False) -> tuple[Path, str]:
    """A sample repository (its good commit) and a config building it."""
    repo = tmp_path / "sample.git"
    good = make_repo(repo, nightly_history(1, datetime.now(UTC)))[-1]
    if flaky:
        good = add_flaky_marker(repo)
    config = write_config(
        tmp_path / "nightly.yaml", f"source: {{repository: {repo}}}\nartifacts: {{base: {tmp_path / 'artifacts'}}}\n"
    )
    return config, good


def by_hand(good: str, bad: str, tests: list[str], **params) -> dict:
    return {"cell": "vllm_amd64", "suite": "unit", "good": good, "bad": bad, "tests": tests, **params}


def the_finding(tmp_path) -> findings.CulpritFinding:
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        (found,) = findings.load(store, "nightly_ci")
    finally:
        store.close()
    return found


def report(tmp_path, what: str, found: findings.CulpritFinding, steps: list, seconds: float) -> None:
    """The figures of a search, beside the test's files (the benchmark reads them too)."""
    figures = {"what": what, "status": found.status, "rounds": found.rounds, "builds": found.builds,
               "runs": len(steps), "gpu_seconds": found.gpu_seconds, "wall_seconds": round(seconds, 1)}  # fmt: skip
    (tmp_path / "figures.json").write_text(json.dumps(figures))
    print(json.dumps(figures))


@pytest.mark.parametrize(("n", "k", "culprit_at"), [(64, 1, 40)])
def test_a_planted_culprit_among_n_commits_is_found_and_verified_by_hand(airflow_home, tmp_path, n, k, culprit_at):
    config, good = setup(tmp_path)
    commits = add_commits(tmp_path / "sample.git", n, culprit_at=culprit_at)
    t0 = time.monotonic()
    steps = run_culprit(config, by_hand(good, commits[-1], [BROKEN_TEST], parallelism=k))
    found = the_finding(tmp_path)
    report(tmp_path, f"N={n} k={k} by hand", found, steps, time.monotonic() - t0)

    assert (found.status, found.culprit, found.parent) == ("culprit", commits[culprit_at], commits[culprit_at - 1])
    assert found.author == "nightly-ci <ci@localhost>" and (found.subject or "").endswith(
        "route to the first worker only"
    )
    # By hand the last good image is not known: the replay builds it (one build), then the bisection.
    assert found.rounds <= math.ceil(math.log(n) / math.log(k + 1))
    assert found.builds - 1 <= math.ceil(math.log2(n)) + 2
    # Verified: the culprit failed every run, its parent passed every run.
    verify = [e for e in found.evidence if e["mode"] == "verify"]
    assert {e["commit"]: e["verdict"] for e in verify} == {commits[culprit_at]: "bad", commits[culprit_at - 1]: "good"}
    assert all(len(e["runs"][BROKEN_TEST]) == 3 for e in verify)
    # Every step was a run of its own, with the id its finding and step give it.
    first = found.nightly_run_id
    finding = {"cell": "vllm_amd64", "suite": "unit", "nightly_run_id": first}
    assert [rid for rid, _ in steps[1:]] == [search_run_id(finding, i) for i in range(1, len(steps))]
    assert len(steps) == 1 + found.rounds + 1  # the replay, the rounds, the verification
    assert all(e.get("task_id") == "vllm_amd64.test" and e.get("run_id") for e in found.evidence)


def test_a_flaky_test_is_never_named_a_culprit(airflow_home, tmp_path):
    config, good = setup(tmp_path, flaky=True)
    commits = add_commits(tmp_path / "sample.git", 4)
    steps = run_culprit(config, by_hand(good, commits[-1], [FLAKY]))
    found = the_finding(tmp_path)

    # The replay on the last good commit: fails 1 of 3 runs (the test fails on even runs).
    assert (found.status, found.culprit, found.rounds) == ("flaky", None, 0)
    assert len(steps) == 1 and found.builds == 1  # the good image only; no candidate built
    (replay,) = found.evidence
    assert replay["mode"] == "replay" and replay["runs"] == {FLAKY: ["passed", "failed", "passed"]}
    assert re.fullmatch(r".+@sha256:[0-9a-f]{64}", replay["image"])
