"""Test cases from a JUnit report, one parser for everyone who reads them: the reruns
(which cases failed tonight), the summary (the table's cases, the reruns' outcomes, each
case's duration) and the history. Pure Python, no Airflow."""

from __future__ import annotations

from include.nightly_ci.history.records import ERROR, FAILED, PASSED, SKIPPED


def junit_results(xml_text: str) -> dict[str, tuple[str, float | None]]:
    """Every test case of a JUnit report: 'classname::name' -> (passed|failed|error|skipped,
    seconds). A report cut short raises ElementTree's ParseError (a SyntaxError)."""
    import xml.etree.ElementTree as ET  # at run time only: operator modules import this one

    cases = {}
    for case in ET.fromstring(xml_text).iter("testcase"):
        status = PASSED
        for child, name in (("failure", FAILED), ("error", ERROR), ("skipped", SKIPPED)):
            if case.find(child) is not None:
                status = name
                break
        try:
            seconds: float | None = float(case.get("time", ""))
        except ValueError:
            seconds = None
        cases[f"{case.get('classname', '')}::{case.get('name', '')}"] = (status, seconds)
    return cases


def junit_cases(xml_text: str) -> dict[str, str]:
    """Every test case of a JUnit report: 'classname::name' -> passed|failed|error|skipped."""
    return {test: status for test, (status, _) in junit_results(xml_text).items()}


def node_id(test_id: str) -> str:
    """The pytest node id of JUnit id 'classname::name', run from the folder pytest ran in
    (its rootdir): 'tests.unit.test_x.TestA::test_y[p]' -> 'tests/unit/test_x.py::TestA::test_y[p]'.

    pytest's classname is the node id's path with '/' as '.' and '.py' dropped, then its
    classes: the parts from the first one starting with "Test" are classes. The limit: a
    folder or module named Test*, a folder or module with a '.' in its name, or test files
    outside the rootdir are not found again (pytest then says "not found": the rerun task
    fails and the summary has no rerun of that suite)."""
    classname, sep, name = test_id.partition("::")
    parts = classname.split(".")
    first_class = next((i for i, part in enumerate(parts) if part.startswith("Test")), len(parts))
    if not sep or not name or "" in parts or first_class == 0:
        raise ValueError(f"{test_id!r} is not a JUnit test id of a module's test ('path.to.module[.Class]::name')")
    return "::".join(["/".join(parts[:first_class]) + ".py", *parts[first_class:], name])
