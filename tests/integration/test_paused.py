"""`python -m include.nightly_ci paused` against a real SQLite metadata database: what it
says of the config's DAGs before they exist, once synced (paused at creation), and after
the nightly was unpaused (issue 14: `make up` then queues the latest night at once)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.services import ROOT, write_config


def test_says_what_the_scheduler_will_run_for_absent_paused_and_unpaused_dags(tmp_path):
    config = write_config(tmp_path / "nightly_ci.yaml", "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__DATABASE__")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        NIGHTLY_CI_CONFIG=str(config),
        PYTHONPATH=str(ROOT),
    )

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    def paused() -> list[str]:
        return run("include.nightly_ci", "paused", str(config)).splitlines()

    unmigrated = subprocess.run([sys.executable, "-m", "include.nightly_ci", "paused", str(config)], env=env,
                                cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert unmigrated.returncode == 1
    assert "cannot read the DAGs from the Airflow metadata database sqlite:///" in unmigrated.stderr
    assert unmigrated.stderr.rstrip().endswith("no such table: dag; run `airflow db migrate` first")
    run("airflow", "db", "migrate")
    assert paused() == [
        f"{dag}: not in the database yet: it starts paused (new DAGs are created paused)"
        for dag in ("nightly_ci", "nightly_ci_retention", "nightly_ci_culprit")
    ]
    run("airflow", "dags", "reserialize")  # the dag-processor's sync: the DAGs are created, paused
    lines = paused()
    assert lines[0] == (
        "nightly_ci: paused: nothing runs until you unpause it; unpausing queues its latest night"
        " at once (catchup off), then one a night"
    )
    assert lines[1].startswith("nightly_ci_retention: paused: nothing runs until you unpause it")
    assert lines[2].startswith("nightly_ci_culprit: paused: nothing runs until you unpause it")
    assert len(lines) == 3

    run("airflow", "dags", "unpause", "nightly_ci")  # what a user did in the UI of an earlier `make up`
    lines = paused()
    # The local config starts in the past, catchup off: the latest 08:00 UTC is due now.
    assert re.fullmatch(
        r"nightly_ci: UNPAUSED: the scheduler queues its run for \d{4}-\d\d-\d\d 08:00 UTC at once;"
        r" to stop it: `airflow dags pause nightly_ci`, or the UI's toggle",
        lines[0],
    ), lines[0]
    assert lines[1].startswith("nightly_ci_retention: paused: ")
