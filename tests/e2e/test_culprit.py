"""The culprit finder on real builds and real test runs of the sample project, with a
planted culprit among N commits, a planted flaky test and a planted external failure.

Each search runs as the scheduler would run it (tests/services.py run_culprit): the first
run with its conf, then every run a step triggered, with the conf it was triggered with.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from dev.fake_slack import FakeSlack
from dev.sample_repo import BROKEN_TEST, add_commit, add_commits, add_flaky_marker, make_repo, nightly_history
from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.culprit.operators import BeginSearchOperator, search_run_id
from include.nightly_ci.history import findings
from include.nightly_ci.history.store import HistoryStore
from include.nightly_ci.names import tag_safe_run_id
from tests.e2e.test_flakes import asset_events
from tests.services import free_port, run_culprit, run_dag, run_id_of, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FLAKY = "tests.unit.test_flaky::test_flaky_on_every_other_run"


def sample_setup(tmp_path, *, flaky: bool = False) -> tuple[Path, str]:
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


def saved(tmp_path) -> list[findings.CulpritFinding]:
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        return findings.load(store, "nightly_ci")
    finally:
        store.close()


def the_finding(tmp_path) -> findings.CulpritFinding:
    (found,) = saved(tmp_path)
    return found


def report(tmp_path, what: str, found: findings.CulpritFinding, steps: list, seconds: float) -> None:
    """The figures of a search, beside the test's files (the benchmark reads them too)."""
    figures = {"what": what, "status": found.status, "rounds": found.rounds, "builds": found.builds,
               "runs": len(steps), "gpu_seconds": found.gpu_seconds, "wall_seconds": round(seconds, 1)}  # fmt: skip
    (tmp_path / "figures.json").write_text(json.dumps(figures))
    print(json.dumps(figures))


@pytest.mark.parametrize(("n", "k", "culprit_at"), [(64, 1, 40)])
def test_a_planted_culprit_among_n_commits_is_found_and_verified_by_hand(airflow_home, tmp_path, n, k, culprit_at):
    config, good = sample_setup(tmp_path)
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
    config, good = sample_setup(tmp_path, flaky=True)
    commits = add_commits(tmp_path / "sample.git", 4)
    steps = run_culprit(config, by_hand(good, commits[-1], [FLAKY]))
    found = the_finding(tmp_path)

    # The replay on the last good commit: fails 1 of 3 runs (the test fails on even runs).
    assert (found.status, found.culprit, found.rounds) == ("flaky", None, 0)
    assert len(steps) == 1 and found.builds == 1  # the good image only; no candidate built
    (replay,) = found.evidence
    assert replay["mode"] == "replay" and replay["runs"] == {FLAKY: ["passed", "failed", "passed"]}
    assert re.fullmatch(r".+@sha256:[0-9a-f]{64}", replay["image"])


# A test that reads a file from the runner's mounted model folder (as the real project's
# tests read the Hugging Face cache): when that file goes bad, it fails in every image.
MODEL_TEST = "tests.integration.test_models::test_the_tokenizer_is_json"
MODELS_TEST_FILE = """import json
from pathlib import Path

import pytest


@pytest.mark.integration
@pytest.mark.nightly
def test_the_tokenizer_is_json():
    path = Path("/models/tokenizer.json")
    if not path.exists():
        pytest.skip("no model folder mounted")
    assert json.loads(path.read_text())["version"]
"""


class StandInSlack:
    """The stand-in Slack (dev/fake_slack.py) on a free loopback port, as the Slack API."""

    def __init__(self, tmp_path: Path):
        self.log = tmp_path / "slack.jsonl"
        self.server = FakeSlack(free_port(), self.log)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        conn = {"conn_type": "slack", "password": "xoxb-test", "extra": {"base_url": f"http://127.0.0.1:{port}/api/"}}
        self.env = {"AIRFLOW_CONN_NIGHTLY_CI_SLACK": json.dumps(conn)}

    def received(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


def night(config: Path, date: str, env: dict[str, str]) -> str:
    proc = run_dag(config, logical_date=date, conf={"frameworks": ["vllm"], "arches": ["amd64"]}, env=env)
    assert "DagRun Finished" in proc.stdout, proc.stdout[-3000:]
    return run_id_of(proc.stdout)


def test_a_night_whose_commit_breaks_a_test_ends_with_the_culprit_in_slack(airflow_home, tmp_path):
    """End to end in the demo setup: night 1 passes; 16 commits later (one breaks the router)
    and with the runner's model file gone bad, night 2 has two regressions; the nightly
    hands both to the culprit finder, which names the commit that broke the router
    (verified) and calls the model failure external (no build), each in Slack, threaded
    under night 2's message."""
    repo, models = tmp_path / "sample.git", tmp_path / "models"
    make_repo(repo, nightly_history(1, datetime.now(UTC)))
    good = add_commit(repo, {"tests/integration/test_models.py": MODELS_TEST_FILE}, "test the model files")
    models.mkdir()
    (models / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    config = write_config(tmp_path / "nightly.yaml", (
        f"source: {{repository: {repo}}}\nartifacts: {{base: {tmp_path / 'artifacts'}}}\n"
        "notifications: {slack: {channel: '#nightly-ci'}}\n"
        f"pools: {{gpu-l40-amd64: {{runner: {{volumes: {{{models}: /models}}}}}}}}\n"
    ))  # fmt: skip
    slack = StandInSlack(tmp_path)

    night_1 = night(config, "2026-11-20T08:00:00+00:00", slack.env)
    commits = add_commits(repo, 16, culprit_at=9)
    (models / "tokenizer.json").write_text("{not json")  # outside every image: the runner's folder
    night_2 = night(config, "2026-11-21T08:00:00+00:00", slack.env)

    # The nightly handed both regressions to the finder, in one event of its Asset.
    event = asset_events("nightly_ci.regressions")[night_2]["findings"]
    assert {(f["suite"], tuple(f["tests"])) for f in event} == {
        ("unit", (BROKEN_TEST,)),
        ("integration", (MODEL_TEST,)),
    }
    assert all(f["good"]["run_id"] == night_1 and f["good"]["commit"] == good for f in event)
    # The asset-triggered run dispatches one search run per finding, with ids of their own.
    items = BeginSearchOperator(task_id="begin", store=ArtifactStore(str(tmp_path / "artifacts")),
                                nightly_dag_id="nightly_ci", suites={"vllm_amd64": ["unit", "integration"]},
                                history_conn_id="nightly_ci_history").execute(_event_context(event))  # fmt: skip
    assert [i["trigger_run_id"] for i in items] == [search_run_id(f, 0) for f in event]

    runs, walls = {}, {}
    for item in items:
        t0 = time.monotonic()
        runs[item["conf"]["finding"]["suite"]] = run_culprit(config, item["conf"], env=slack.env)
        walls[item["conf"]["finding"]["suite"]] = time.monotonic() - t0
    by_suite = {f.suite: f for f in saved(tmp_path)}
    unit, external = by_suite["unit"], by_suite["integration"]
    report(tmp_path, "N=16 k=3 from the nightly", unit, runs["unit"], walls["unit"])
    assert len(runs["integration"]) == 1  # the replay only

    assert (unit.status, unit.culprit, unit.parent) == ("culprit", commits[9], commits[8])
    assert unit.builds <= math.ceil(math.log2(16)) + 2 and unit.rounds <= 2  # k=3: ceil(log_4 16)
    assert (external.status, external.builds, external.rounds, external.culprit) == ("external", 0, 0, None)
    (replay,) = external.evidence
    assert replay["mode"] == "replay" and replay["commit"] == good and replay["runs"] == {MODEL_TEST: ["failed"] * 3}

    # Slack: night 2's message, then one message per finding in its thread.
    posts = slack.received()
    night_2_post = next(
        p for p in posts if quote(night_2, safe="") in p["body"]["text"] and "thread_ts" not in p["body"]
    )
    found = [p for p in posts if p["body"].get("thread_ts") == night_2_post["ts"]]
    assert len(found) == 2, posts
    texts = {json.dumps(p["body"]) for p in found}
    assert any(commits[9][:12] in t and "route to the first worker only" in t for t in texts), texts
    assert any("external" in t.lower() for t in texts), texts
    thread = json.loads((tmp_path / "artifacts" / tag_safe_run_id(night_2) / "slack.json").read_text())
    assert thread["ts"] == night_2_post["ts"]
    # And beside the night's results: each finding as the history store holds it.
    kept = json.loads(
        (tmp_path / "artifacts" / tag_safe_run_id(night_2) / "culprit" / "vllm_amd64.unit.json").read_text()
    )
    assert (kept["status"], kept["culprit"], kept["rounds"], kept["builds"]) == (
        "culprit",
        commits[9],
        unit.rounds,
        unit.builds,
    )


def _event_context(findings_: list[dict]) -> dict:
    """What a run triggered by the Asset sees: its events, each with the nightly's extra."""

    class Event:
        extra = {"findings": findings_}

    class Ti:
        def xcom_push(self, key: str, value: object) -> None:
            pass

    class Run:  # its first task marks its folder (records.mark_run)
        conf: dict = {}
        dag_id, run_id, run_type = "nightly_ci_culprit", "asset_triggered__2026-11-21T09:00:00+00:00", "asset_triggered"
        logical_date, run_after = None, datetime.now(UTC)

    return {"ti": Ti(), "dag_run": Run(), "triggering_asset_events": {"nightly_ci.regressions": [Event()]}}
