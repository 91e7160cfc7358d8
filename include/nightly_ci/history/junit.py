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
