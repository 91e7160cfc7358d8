"""The culprit finder's part of the triage page (include/nightly_ci/ui/finding_pages.py):
evidence as the culprit DAG stores it, or cut short, or of another shape, renders; only a
full task instance (DAG, run, task) becomes a link; stored strings are text."""

from __future__ import annotations

from dataclasses import replace

from include.nightly_ci.history import findings
from include.nightly_ci.history.finding_views import status_words
from include.nightly_ci.ui import finding_pages
from tests.unit.test_triage_pages import LINKS

BASE = findings.CulpritFinding("dag", "scheduled__n1", "2026-11-01T02:00:00+00:00", "cell<i>", "unit", ("t::a",),
                               "a" * 40, "b" * 40, updated="2026-11-01T03:00:00+00:00")  # fmt: skip


def test_odd_evidence_renders_and_only_a_whole_task_instance_is_linked():
    evidence = (
        {"mode": "range", "round": 0, "commit": "a" * 40, "runs": {}, "verdict": "the same commit"},
        {"mode": "bisect", "round": 1, "commit": None, "runs": ["not", "a", "map"], "verdict": "bad",
         "dag_id": "culprit", "run_id": "r1"},  # no task: no link
        {"mode": "verify", "round": 2, "commit": "c" * 40, "runs": {"t::a": ["failed"], "t::b": "odd"},
         "verdict": "<b>bad</b>", "dag_id": "culprit", "run_id": "r1", "task_id": "verify", "map_index": "3"},
        {"mode": "verify", "round": 2, "commit": "d" * 40, "runs": {"t::a": ["passed"]}, "verdict": "good",
         "dag_id": "culprit", "run_id": "r1", "task_id": "verify", "map_index": 1},
    )  # fmt: skip
    page = finding_pages.night_section([replace(BASE, evidence=evidence)], LINKS,
                                       "nightly")  # fmt: skip
    assert page.count("<tr>") == 5 and page.count('href="http://ui/') == 2
    assert 'href="http://ui/culprit/r1/verify/None"' in page  # a map index that is not an int is not one
    assert 'href="http://ui/culprit/r1/verify/1"' in page and 'title="culprit / r1 / verify[1]"' in page
    assert "<b>" not in page and "&lt;b&gt;bad&lt;/b&gt;" in page and "cell&lt;i&gt;" in page
    assert "t::b" not in page  # outcomes that are not a list are not runs


def test_every_status_has_words_and_searching_counts_its_rounds():
    for status in findings.STATUSES:
        assert status_words(replace(BASE, status=status))
    assert status_words(BASE) == "searching: 0 rounds so far"
    one = replace(BASE, rounds=1)
    assert status_words(one) == "searching: 1 round so far"
    assert finding_pages.gpu_time(59 * 60) == "59 GPU-minutes" and finding_pages.gpu_time(5400) == "1.50 GPU-hours"
