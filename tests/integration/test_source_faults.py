"""resolve_source against git servers that fail (AUDIT-RELIABILITY.md H6): a server that
accepts and stalls, one that is down, a repository that does not exist. Each on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from include.nightly_ci.build.source import resolve
from include.nightly_ci.errors import SourceError, SourceUnavailable
from include.nightly_ci.records import INFRA, classify_failure
from tests import services
from tests.services import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def stalled_server() -> Iterator[int]:
    """Accepts every connection and never answers, as a hung git daemon or proxy does."""
    with services.stalled_server() as port:
        yield port


def test_a_stalled_git_server_ends_in_a_retryable_error_at_its_timeout(stalled_server):
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=r"did not finish within 3 s") as info:
        resolve(
            f"git://127.0.0.1:{stalled_server}/repo.git",
            "main",
            run_type="scheduled",
            logical_date=None,
            timeout_seconds=3,
        )
    assert time.monotonic() - started < 15  # not forever; Airflow's retries take it from here
    assert classify_failure("source", type(info.value).__name__, str(info.value)) == INFRA


def test_a_git_server_that_is_down_is_retryable_infra():
    with pytest.raises(SourceUnavailable, match=r"(?i)connection refused|unable to connect") as info:
        resolve(f"git://127.0.0.1:{free_port()}/repo.git", "main", run_type="scheduled", logical_date=None)
    assert classify_failure("source", type(info.value).__name__, str(info.value)) == INFRA


def test_a_repository_that_does_not_exist_fails_at_once(tmp_path):
    started = time.monotonic()
    with pytest.raises(SourceError, match="does not appear to be a git repository"):
        resolve(str(tmp_path / "nope.git"), "main", run_type="scheduled", logical_date=None)
    assert time.monotonic() - started < 10
