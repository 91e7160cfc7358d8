"""The triage page's HTML (include/nightly_ci/ui/pages.py) and its square rule
(history/views.py suite_state): strings escaped, no link but http(s) or the page's own."""

from __future__ import annotations

import pytest

from include.nightly_ci.history import views
from include.nightly_ci.ui import pages

LINKS = pages.Links(
    run=lambda run_id, stored: stored,
    log=lambda run_id, task_id, try_number: f"http://ui/{task_id}?try_number={try_number}",
    junit=lambda run_id, task_id: pages.page_url("artifact", run_id=run_id, task_id=task_id, file="junit"),
    output=lambda run_id, task_id: "",
    image=lambda pinned: "javascript:alert(1)",
    task=lambda dag_id, run_id, task_id, map_index: f"http://ui/{dag_id}/{run_id}/{task_id}/{map_index}",
)


@pytest.mark.parametrize(
    ("url", "kept"),
    [("https://ui/dags/x", True), ("/nightly-ci/", True), ("suite?cell=a", True), ("javascript:alert(1)", False),
     ("data:text/html,x", False), ("  javascript:x", False), ("", False), (None, False)],
)  # fmt: skip
def test_only_http_and_the_pages_own_links_become_links(url, kept):
    assert pages.href(url) == (url if kept else "")
    assert ("<a " in pages.link(url, "x")) is kept


def test_a_test_id_with_markup_is_text_everywhere():
    odd = 'tests/a.py::t[<script>alert("x")</script>]'
    run = views.CaseRun("r1", "2026-11-01T02:00:00+00:00", "c<b>", "s", odd, "failed", "flaky", ("failed", "passed"),
                        False, 1.0, "c.tests.s", 1, "reg/x@sha256:" + "a" * 64, "http://ui/runs/r1")  # fmt: skip
    night = views.Night("r1", run.night, "abc", run.run_url, False)
    page = pages.test("dag", "nightly", views.TestHistory(odd, (night,), (run,), None, None), LINKS)
    assert "<script>" not in page and "&lt;script&gt;" in page and "c&lt;b&gt;" in page
    assert "javascript:" not in page.split("<a ")[-1]  # the image link is dropped, its text kept
    assert 'href="artifact?run_id=r1&amp;task_id=c.tests.s&amp;file=junit"' in page


@pytest.mark.parametrize(
    ("status", "outcome", "failed", "soft", "state"),
    [("success", "passed", 0, 0, views.PASSED), ("failed", "failed", 2, 1, views.FAILED),
     ("failed", "failed", 0, 3, views.FLAKY), ("failed", "timeout", 0, 0, views.FAILED),
     ("upstream_failed", None, 0, 0, views.NOT_RUN), ("skipped", None, 0, 0, views.NOT_RUN)],
)  # fmt: skip
def test_a_suites_state(status, outcome, failed, soft, state):
    assert views.suite_state(status, outcome, failed, soft) == state
