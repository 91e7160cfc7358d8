"""Prints the system test's timings in pytest's closing summary (CI's log keeps them)."""

from __future__ import annotations

import pytest

from tests.system.timings import TIMINGS


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TIMINGS] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    for text in config.stash.get(TIMINGS, []):
        terminalreporter.write_sep("-", "system test timings")
        terminalreporter.write_line(text)
