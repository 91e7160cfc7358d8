"""A config that would eat the dag-processor, and two runs racing for one moving tag."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from include.nightly_ci.names import LABEL_LOGICAL_DATE
from tests.faults.conftest import Night
from tests.services import airflow_command, airflow_env, dag_runs

pytestmark = [pytest.mark.faults, pytest.mark.slow]
REPO = "ai-dynamo/dynamo"


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_config_is_refused_within_a_second_and_no_run_starts(stand, untouched):
    config = stand.config("bomb", alias_bomb())
    started = time.monotonic()
    check = subprocess.run(
        [sys.executable, "-m", "include.nightly_ci", "check", str(config)],
        env=airflow_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    took = time.monotonic() - started
    assert check.returncode != 0 and "alias" in (check.stdout + check.stderr).lower(), check.stdout + check.stderr
    assert took < 1 + 3, took  # under a second of loading, plus the interpreter's start
    runs_before = dag_runs("nightly_ci")
    env = airflow_env({"NIGHTLY_CI_CONFIG": str(config), **stand.env()})
    proc = airflow_command(["dags", "test", "nightly_ci", "2026-11-19T08:00:00+00:00"], env, timeout=300)
    assert proc.returncode != 0 and "could not be found" in proc.stdout
    assert dag_runs("nightly_ci") == runs_before


def test_two_runs_racing_for_a_moving_tag_leave_it_on_the_newer_night(stand, untouched):
    """A backfilled night and a newer night, run at the same time on the same registries."""
    nights = ["2026-11-29T10:00:00+00:00", "2026-11-29T11:00:00+00:00"]  # newer than any other run here
    done: dict[str, Night] = {}
    threads = [threading.Thread(target=lambda n=n: done.__setitem__(n, stand.run(n, conf={
        "frameworks": ["vllm"], "arches": ["amd64"], "publish": True}))) for n in nights]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    assert {n: done[n].state for n in nights} == dict.fromkeys(nights, "success")
    for reg in (stand.ecr, stand.acr):
        assert reg.client().image(REPO, "nightly-vllm-amd64").labels[LABEL_LOGICAL_DATE] == nights[1]
