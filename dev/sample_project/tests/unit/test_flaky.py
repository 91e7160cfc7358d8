"""A test that is flaky on purpose, deterministically, once a commit makes it so: with the
file flaky-marker next to it (dev/sample_repo.py's add_flaky_marker commits it) it fails
on the suite's own run (NIGHTLY_CI_RERUN=0) and on even reruns, and passes on odd ones. So
its first rerun passes: nightly-ci calls it flaky. Without the file it always passes."""

import os
from pathlib import Path

import pytest

MARKER = Path(__file__).with_name("flaky-marker")


@pytest.mark.unit
@pytest.mark.nightly
def test_flaky_on_every_other_run():
    run = int(os.environ.get("NIGHTLY_CI_RERUN", "0"))
    assert not (MARKER.exists() and run % 2 == 0), f"flaky on purpose: run {run}, and {MARKER.name} is present"
