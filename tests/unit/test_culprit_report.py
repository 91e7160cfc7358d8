"""The culprit finder's Slack message, one per finding: what was found, in words, what it
cost, and the runs that decided it, within Slack's limits."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from dev.fake_slack import refusal
from include.nightly_ci.history.findings import (
    CULPRIT,
    EXTERNAL,
    FLAKY,
    PARTIAL,
    SEARCHING,
    STATUSES,
    TOO_LONG,
    UNVERIFIED,
    CulpritFinding,
)
from include.nightly_ci.report.culprit import finding_message
from include.nightly_ci.report.slack import SECTION_LIMIT

GOOD, BAD = "a" * 40, "b" * 40
SHA, PARENT = "c0ffee1234567890" + "0" * 24, "feed" + "1" * 36
RUN_URL = "http://airflow.test/dags/nightly_ci_culprit/runs/manual__1"
TEST = "tests/test_ops.py::test_matmul[fp16]"


def finding(**changes) -> CulpritFinding:
    base = CulpritFinding(
        "nightly_ci",
        "scheduled__2026-11-28T08:00:00+00:00",
        "2026-11-28T08:00:00+00:00",
        "vllm_amd64",
        "unit",
        (TEST, "tests/test_ops.py::test_add"),
        GOOD,
        BAD,
    )
    return replace(base, **changes)


def culprit(**changes) -> CulpritFinding:
    found = {"status": CULPRIT, "culprit": SHA, "parent": PARENT, "author": "Ada Lovelace",
             "subject": "Speed up <matmul> & add", "rounds": 3, "builds": 4, "gpu_seconds": 5400.0}  # fmt: skip
    return finding(**{**found, **changes})


def evidence(n: int, **extra) -> tuple[dict, ...]:
    return tuple(
        {"mode": "bisect", "round": 1 + i // 3, "commit": f"{i:040x}", "image": f"reg/x@sha256:{i:064x}",
         "runs": {TEST: ["failed", "failed", "passed"]}, "verdict": "bad", **extra}
        for i in range(n)
    )  # fmt: skip


def message(f: CulpritFinding, repository_url: str | None = "https://github.com/acme/vllm", run_url=RUN_URL, ops=None):
    return finding_message(f, repository_url=repository_url, run_url=run_url, ops_group_id=ops)


def everything(msg: dict) -> str:
    return json.dumps(msg, ensure_ascii=False)


def sections(msg: dict) -> list[str]:
    return [b["text"]["text"] for b in msg["blocks"] if b["type"] == "section"]


@pytest.mark.parametrize(
    ("f", "words"),
    [
        (culprit(), "culprit found and verified"),
        (finding(status=EXTERNAL), "the last good night's image fails too"),
        (finding(status=FLAKY), "handed to the flake handling"),
        (finding(status=UNVERIFIED, culprit=SHA), "verification did not confirm"),
        (finding(status=PARTIAL, gpu_seconds=7200.0), "GPU budget spent"),
        (finding(status=TOO_LONG), "not searched"),
        (finding(status=SEARCHING), "still searching"),
    ],
)
def test_every_status_is_said_in_words_with_the_suite_and_the_failing_tests(f, words):
    msg = message(f)
    text = everything(msg)
    assert words in msg["text"]  # the notification's own text says it, not only the blocks
    assert "vllm_amd64" in msg["text"] and "unit" in msg["text"]
    assert TEST in text and "tests/test_ops.py::test_add" in text
    assert refusal(msg) is None  # the stand-in takes it as Slack would


def test_every_status_has_its_own_words():
    said = {s: message(finding(status=s, culprit=SHA)).get("text").splitlines()[0] for s in STATUSES}
    assert len(set(said.values())) == len(STATUSES)


def test_a_culprit_names_its_commit_author_and_subject_and_what_it_cost():
    text = everything(message(culprit()))
    assert f"<https://github.com/acme/vllm/commit/{SHA}|{SHA[:12]}>" in text
    assert "Ada Lovelace" in text
    assert "Speed up &lt;matmul&gt; &amp; add" in text  # mrkdwn's three escapes
    assert "<matmul>" not in text
    assert "3 rounds" in text and "4 builds" in text and "1.50 GPU hours" in text


def test_the_commit_is_linked_only_for_an_https_repository():
    for url in ("http://127.0.0.1:3000/acme/vllm", "git@github.com:acme/vllm.git", "file:///srv/vllm", None):
        text = everything(message(culprit(), repository_url=url))
        assert f"`{SHA[:12]}`" in text and "/commit/" not in text, url
    text = everything(message(culprit(), repository_url="https://github.com/acme/vllm.git/"))
    assert f"<https://github.com/acme/vllm/commit/{SHA}|{SHA[:12]}>" in text  # .git and / dropped


@pytest.mark.parametrize(
    ("seconds", "said"), [(5400.0, "1.50 GPU hours"), (600.0, "10 GPU minutes"), (0.0, "0 GPU minutes")]
)
def test_gpu_time_in_hours_with_two_decimals_or_minutes(seconds, said):
    assert said in everything(message(culprit(gpu_seconds=seconds)))


def test_partial_and_too_long_give_the_range_left():
    for status in (PARTIAL, TOO_LONG):
        text = everything(message(finding(status=status)))
        assert f"/commit/{GOOD}|{GOOD[:12]}>" in text and f"/commit/{BAD}|{BAD[:12]}>" in text, status


def test_unverified_names_the_commit_it_ended_on_but_blames_nobody():
    msg = message(finding(status=UNVERIFIED, culprit=SHA, author="Ada Lovelace"))
    assert SHA[:12] in everything(msg)
    assert "culprit found" not in msg["text"]


def test_evidence_is_short_the_rest_counted():
    msg = message(culprit(evidence=evidence(25)))
    text = "\n".join(sections(msg))
    lines = [line for line in text.splitlines() if line.startswith("• ") and "round" in line]
    assert len(lines) == 10
    assert "15 more runs" in text
    assert f"`{0:040x}"[:13] in text and "2/3 failed" in text and "bad" in text


def test_evidence_of_a_task_links_its_task_instance_in_the_airflow_ui():
    where = {"dag_id": "nightly_ci_culprit", "run_id": "manual__2026-11-28T09:00:00+00:00", "task_id": "round_1.run"}
    text = everything(message(culprit(evidence=evidence(2, **where, map_index=1) + evidence(1, **where))))
    run = "/dags/nightly_ci_culprit/runs/manual__2026-11-28T09%3A00%3A00%2B00%3A00/tasks/round_1.run"
    assert f"{run}/mapped/1|" in text  # the mapped instance, as Airflow's own log_url makes it
    assert f"{run}|" in text  # no map index: the task itself
    assert "/tasks/" not in everything(message(culprit(evidence=evidence(2, **where)), run_url=None))


def test_every_section_fits_slacks_limit_even_with_hundreds_of_long_tests():
    long_tests = tuple(f"tests/serve/test_vllm.py::TestServing::test_deployment[case-{i:04d}-" + "x" * 120 + "]"
                       for i in range(300))  # fmt: skip
    msg = message(culprit(tests=long_tests, evidence=evidence(40, runs={t: ["failed"] * 3 for t in long_tests[:30]})))
    assert all(len(t) <= SECTION_LIMIT for t in sections(msg))
    assert refusal(msg) is None
    text = "\n".join(sections(msg))
    assert long_tests[0] in text and "more tests" in text  # the first ones named, the rest counted


def test_the_ops_group_is_called_when_a_person_must_act_not_for_a_flake():
    assert "<!subteam^S0OPS|@ops-support>" in everything(message(culprit(), ops="S0OPS"))
    assert "<!subteam^S0OPS|@ops-support>" in everything(message(finding(status=EXTERNAL), ops="S0OPS"))
    assert "ops-support" not in everything(message(finding(status=FLAKY), ops="S0OPS"))


def test_the_search_run_is_linked_when_known():
    assert f"<{RUN_URL}|" in everything(message(culprit()))
    assert "http://airflow.test" not in everything(message(culprit(), run_url=None))
