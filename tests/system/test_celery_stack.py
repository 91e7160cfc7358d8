"""The nightly under the production topology, without containers: Postgres and Redis,
the api-server, scheduler, dag-processor, triggerer and three Celery workers (one for the
default queue, one for the build queues, one for the GPU pool's queue), driven only as an
operator would drive them: the config, the REST API and `airflow backfill create`.

The workers share nothing but the database, the broker, the registries and the object
store, as on separate hosts: each has its own working folder, Airflow home, task logs,
TMPDIR and Docker engine; the source is served over git://, artifacts and task logs go to
S3 (moto's server). Whatever relied on a shared disk or engine would fail here.

The tests run in file order on one stack and one history of runs:
1. the scheduled run starts by itself at its cron time (a minute ahead, set in the config);
2. a run triggered through the REST API with Params builds and tests only its cells;
3. a backfill of three missed nights builds each night's commit, and the moving tags stay
   on the newest night;
4. with the GPU host unreachable a run's test tasks fail as infra; once the host is back,
   clearing one of them through the API re-runs only it, against the same image digest,
   and the run's summary is rewritten;
5. a night whose commit breaks a test starts the culprit finder by itself (the nightly's
   Asset event), and the finder's runs chain step by step through the scheduler to the
   culprit, verified, in the history store and in Slack.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest

from dev.fake_slack import FakeSlack
from dev.sample_repo import BROKEN_TEST, add_commits, make_repo
from include.nightly_ci.culprit.operators import search_run_id
from include.nightly_ci.history import findings
from include.nightly_ci.history.store import HistoryStore
from include.nightly_ci.names import LABEL_REVISION, tag_safe_run_id
from tests.services import (
    ENGINE,
    GitServer,
    LocalRegistry,
    MotoServer,
    ScratchEngine,
    base_images,
    free_port,
    wait_for,
    write_config,
)
from tests.system.processes import AirflowStack, Worker
from tests.system.timings import TIMINGS

# One stack, one scenario in steps: the scheduled run at its cron time (the module's first
# minutes), then runs that read it (the REST trigger, the backfill's moving tags), then the
# ones that change the stack (the GPU host down, the config's deadline): never shuffled.
pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.random_order(disabled=True)]
DAG = "nightly_ci"
CULPRIT_DAG = f"{DAG}_culprit"
REPO = "ai-dynamo/dynamo"
CELLS = [f"{fw}_{arch}" for fw in ("vllm", "sglang", "trtllm") for arch in ("amd64", "arm64")]
SUITES = ("unit", "integration", "e2e_1gpu", "e2e_2gpu")
CELL_TASKS = ("build_framework", "push_framework_ecr", "build_runtime", "push_runtime_ecr", "push_runtime_acr")
GPU_ENGINE = "gpu_host_engine"  # the GPU pool's Docker engine: a connection kept in the metadata DB
BUILD_QUEUES = ["cpu-amd-m5-4xlarge", "cpu-arm-r8g-4xlarge"]
BUCKET = "nightly-ci-system"
DEADLINE_HOURS = 0.01


class System:
    """The stack, the services around it and what the tests learn on the way."""

    def __init__(self, root: Path):
        self.root = root
        self.ecr = LocalRegistry(root / "ecr")
        self.acr = LocalRegistry(root / "acr")
        self.slack_log = root / "slack.jsonl"
        self.slack = FakeSlack(free_port(), self.slack_log)
        # The cron time: the next whole minute at least 75 s away, which leaves the stack
        # time to come up and the DAG to be parsed and unpaused before it.
        now = datetime.now(UTC)
        self.cron_time = (now + timedelta(seconds=75 + 59)).replace(second=0, microsecond=0)
        self.nights = [self.cron_time - timedelta(days=n) for n in (3, 2, 1)]
        # One commit an hour before each missed night, then the head (committed now).
        history = [(night - timedelta(hours=1), f"0.1.{i}", f"night {i}") for i, night in enumerate(self.nights)]
        self.git = GitServer(root / "git")
        self.commits = make_repo(root / "git" / "sample.git", [*history, (now, None, "the project as it is now")])
        self.moto = MotoServer()
        # Each worker's host has an engine of its own; the GPU host's is also reached
        # through the GPU pool's connection (GPU_ENGINE).
        self.engines = {name: ScratchEngine(f"sys-{name}") for name in ("coordinator", "builder", "gpu")}
        self.config = write_config(
            root / "system.yaml",
            f"source: {{repository: {self.git.url('sample.git')}}}\n"
            f"dag: {{schedule: '{self.cron_time.minute} {self.cron_time.hour} * * *', "
            f"start_date: {self.cron_time.date().isoformat()}}}\n"
            "registries: {ecr: {conn_id: sys_ecr}, acr: {conn_id: sys_acr}}\n"
            f"pools: {{gpu-l40-amd64: {{runner: {{conn_id: {GPU_ENGINE}}}}}}}\n"
            f"artifacts: {{base: 's3://{BUCKET}/nightly', conn_id: sys_aws, single_host: false}}\n"
            # 36 s: the 6-cell scheduled run (50-60 s here) overruns it, so the Deadline Alert
            # fires while it runs; the 1-cell run with the GPU host down (15-21 s) is cleared
            # before it, which is the case Airflow's Clear used to fail on.
            f"notifications: {{slack: {{conn_id: sys_slack}}, deadline_hours: {DEADLINE_HOURS}}}\n",
        )
        self.stack = AirflowStack(
            root / "stack",
            self.config,
            workers=[
                Worker(name, queues, 4, {"DOCKER_HOST": self.engines[name].url})
                for name, queues in (
                    ("coordinator", ["default"]),
                    ("builder", BUILD_QUEUES),
                    ("gpu", ["gpu-l40-amd64"]),
                )
            ],
            extra_env={
                **self.moto.conn_env("sys_aws"),
                # Task logs in the object store, as docker-compose.yaml ships it: the
                # api-server reads them whichever worker's folder they were written in.
                "AIRFLOW__LOGGING__REMOTE_LOGGING": "true",
                "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{BUCKET}/logs",
                "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "sys_aws",
                **self.ecr.conn_env("sys_ecr"),
                **self.acr.conn_env("sys_acr", "azure_container_registry"),
                "AIRFLOW_CONN_SYS_SLACK": json.dumps(
                    {
                        "conn_type": "slackwebhook",
                        "password": f"http://127.0.0.1:{self.slack.server_port}/services/T/B/x",
                    }
                ),
            },
        )
        self.timings: dict[str, float] = {}
        self.runs: dict[str, str] = {}  # name -> run id
        self.stops = contextlib.ExitStack()

    def start(self) -> None:
        """Start everything; each part's stop is registered as soon as it runs, so that
        stop() undoes exactly what started, in reverse, even after a failure."""
        import docker

        began = time.monotonic()
        parts: list[LocalRegistry | GitServer | MotoServer | ScratchEngine] = [self.ecr, self.acr, self.git, self.moto]
        for part in [*parts, *self.engines.values()]:
            self.stops.callback(part.stop)
            part.start()
        self.s3().create_bucket(Bucket=BUCKET)
        threading.Thread(target=self.slack.serve_forever, daemon=True).start()
        self.stops.callback(self.slack.shutdown)
        # The builder host has the base images, as a real builder has its registry's.
        main = docker.APIClient(base_url=ENGINE)
        self.engines["builder"].load_from(main, *base_images(main))
        self.timings["git, S3, registries and 3 engines up (s)"] = time.monotonic() - began
        self.stops.callback(self.stack.stop)
        self.stack.start()
        self.timings.update(self.stack.timings)

    def stop(self) -> None:
        self.stops.close()

    def s3(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.moto.url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    def stored(self, run_id: str, key: str) -> dict:
        """RUN/KEY of the artifact store, as JSON."""
        body = self.s3().get_object(Bucket=BUCKET, Key=f"nightly/{tag_safe_run_id(run_id)}/{key}")["Body"]
        return json.loads(body.read())

    def stored_keys(self, run_id: str) -> list[str]:
        prefix = f"nightly/{tag_safe_run_id(run_id)}/"
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"].removeprefix(prefix) for page in pages for o in page.get("Contents", [])]

    def records_on_disk(self) -> list[Path]:
        """Every record file in any worker's folder (there should be none: they go to S3)."""
        found = []
        for dirpath, _, files in os.walk(self.stack.root / "hosts"):
            found += [
                Path(dirpath) / f
                for f in files
                if f in ("record.json", "results.json", "results.md") or Path(dirpath).name == "tasks"
            ]
        return found

    def messages(self) -> list[str]:
        if not self.slack_log.exists():
            return []
        return [json.loads(line)["body"].get("text", "") for line in self.slack_log.read_text().splitlines()]

    def results(self, run_id: str) -> dict:
        return self.stored(run_id, "results.json")

    def timed_wait(self, name: str, run_id: str, timeout: float = 900) -> dict:
        began = time.monotonic()
        run = self.stack.wait_for_run(DAG, run_id, timeout)
        self.timings[f"{name} (s)"] = time.monotonic() - began
        return run

    def task_log(
        self, run_id: str, task_id: str, try_number: int = 1, *, dag_id: str = DAG, map_index: int = -1
    ) -> str:
        path = (f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
                f"?full_content=true&map_index={map_index}")  # fmt: skip
        resp = self.stack.request("GET", path, headers={"Accept": "application/json"})
        assert resp.ok, resp.text
        return "\n".join(str(e.get("event", e)) for e in resp.json()["content"])

    def failures(self, run_id: str, dag_id: str = DAG) -> str:
        """The logs of the run's failed tasks (for an assertion's message)."""
        failed = [i for i in self.stack.task_instances(dag_id, run_id).values() if i["state"] == "failed"]
        return "\n".join(
            f"--- {i['task_id']}[{i['map_index']}]:\n"
            f"{self.task_log(run_id, i['task_id'], i['try_number'], dag_id=dag_id, map_index=i['map_index'])[-3000:]}"
            for i in failed[:3]
        )

    def set_deadline_hours(self, hours: float) -> None:
        """The nightly's Deadline Alert HOURS after a run is queued, for the runs from now
        on: the config rewritten, the DAG file parsed again at once (the REST API's reparse,
        the UI's button) and its new version serialized before this returns."""
        text = self.config.read_text()
        changed = re.sub(r"deadline_hours: [0-9.]+", f"deadline_hours: {hours}", text)
        assert changed != text, text
        dag = self.stack.get(f"/dags/{DAG}/details")
        version = dag["latest_dag_version"]["version_number"]
        self.config.write_text(changed)
        assert self.stack.request("PUT", f"/parseDagFile/{dag['file_token']}").ok

        def reparsed() -> bool:
            latest = self.stack.get(f"/dags/{DAG}/details")["latest_dag_version"]
            return latest["version_number"] > version

        wait_for(reparsed, 120, f"version {version + 1} of {DAG} with a deadline of {hours} h")

    def set_gpu_engine(self, host: str) -> None:
        body = {"connection_id": GPU_ENGINE, "conn_type": "docker", "host": host}
        resp = self.stack.request("PATCH", f"/connections/{GPU_ENGINE}", json=body)
        if resp.status_code == 404:
            resp = self.stack.request("POST", "/connections", json=body)
        assert resp.ok, resp.text


@pytest.fixture(scope="module")
def system(tmp_path_factory, provisioned, request):
    s = System(tmp_path_factory.mktemp("system"))
    began = time.monotonic()
    try:
        s.start()
        yield s
    finally:
        s.stop()
        s.timings["whole system test (s)"] = time.monotonic() - began
        lines = [f"  {name}: {seconds:.1f}" for name, seconds in s.timings.items()]
        text = "CeleryExecutor on Postgres and Redis, 3 workers on 3 engines, artifacts and logs on S3:\n" + "\n".join(
            lines
        )
        (s.root / "timings.txt").write_text(text + "\n")
        request.config.stash[TIMINGS].append(text)


def test_the_scheduled_run_starts_by_itself_at_its_cron_time(system):
    stack = system.stack
    stack.wait_for_dag(DAG)
    system.set_gpu_engine(system.engines["gpu"].url)
    unpaused_at = datetime.now(UTC)
    assert stack.request("PATCH", f"/dags/{DAG}", json={"is_paused": False}).ok
    assert unpaused_at < system.cron_time, "the stack came up too late to see the cron time arrive"

    deadline = time.monotonic() + (system.cron_time - datetime.now(UTC)).total_seconds() + 120
    scheduled: list[dict] = []
    while not scheduled and time.monotonic() < deadline:
        stack.check_alive()
        scheduled = [r for r in stack.runs(DAG) if r["run_type"] == "scheduled"]
        time.sleep(2)
    assert len(scheduled) == 1, f"no scheduled run by {system.cron_time}: {stack.runs(DAG)}"
    run = scheduled[0]
    system.runs["scheduled"] = run["dag_run_id"]
    assert datetime.fromisoformat(run["logical_date"]) == system.cron_time
    queued = datetime.fromisoformat(run["queued_at"])
    assert system.cron_time <= queued < system.cron_time + timedelta(seconds=60), (queued, system.cron_time)

    run = system.timed_wait("scheduled run, 6 cells", run["dag_run_id"])
    tis = stack.task_instances(DAG, run["dag_run_id"])
    assert run["state"] == "success", system.failures(run["dag_run_id"])
    # Every task passed; the flake reruns had nothing to rerun, so Airflow skipped them.
    reruns = {f"{c}.reruns.rerun" for c in CELLS if c.endswith("amd64")}
    # No regression either: nothing was announced to the culprit finder.
    skipped = dict.fromkeys([*reruns, "announce_regressions"], "skipped")
    assert {t: i["state"] for t, i in tis.items() if i["state"] != "success"} == skipped
    assert stack.xcom(DAG, run["dag_run_id"], "resolve_source")["commit"] == system.commits[-1]  # the branch head

    # Each worker took only its own queues: GPU-pool suites on the GPU host, builds on the
    # builder, the run's own tasks (the summary among them) on the coordinator.
    hosts = {"gpu-l40-amd64": "gpu", "default": "coordinator"}
    for task_id, ti in tis.items():
        if task_id in skipped:
            continue  # never started, or skipped at once
        queue = expected_queue(task_id)
        assert (ti["queue"], ti["hostname"]) == (queue, hosts.get(queue, "builder")), task_id

    # Shared nothing: every task's record is in S3 and none on any worker's disk; the
    # summary, on a worker that never held one, read them all from there.
    keys = system.stored_keys(run["dag_run_id"])
    # CELL/tasks/TASK.json: the 54 jobs and the 3 amd64 cells' find_flakes.
    assert len([k for k in keys if k.split("/")[1:2] == ["tasks"]]) == 54 + 3, keys
    assert len([k for k in keys if k.endswith("/record.json")]) == 24, keys  # a suite's run
    assert system.records_on_disk() == []
    results = system.results(run["dag_run_id"])
    assert (results["passed"], results["total"]) == (54, 54)
    # The night is in the history store: the stack's Postgres, a database of its own.
    assert results["triage"]["history"] == "recorded", results["triage"]
    history = HistoryStore(stack.postgres.createdb_url(stack.history_conn["schema"]))
    try:
        assert run["dag_run_id"] in history.recorded_runs(DAG)
    finally:
        history.close()
    tested = [r for r in results["rows"] if r["kind"] == "test"]
    assert len(tested) == 24 and all(r["tests"].get("passed", 0) + r["tests"].get("collected", 0) > 0 for r in tested)
    # Each host's engine did its host's work: the GPU host pulled the runtime images it
    # tested, the builder built, the coordinator needed none.
    names = {n: {t for i in e.client().images() for t in i["RepoTags"] or []} for n, e in system.engines.items()}
    assert any(f"/{REPO}" in t for t in names["builder"]) and names["coordinator"] == set(), names
    pulled = {d for i in system.engines["gpu"].client().images() for d in i["RepoDigests"] or []}
    assert any(f"/{REPO}@sha256:" in d for d in pulled), pulled
    # A build's task log, written in the builder's folder, read by the api-server from S3
    # (the builder's log server is not reachable: its host name is only a name here).
    log = system.task_log(run["dag_run_id"], "vllm_arm64.build_runtime")
    assert f"Building vllm/arm64 target 'runtime' for linux/arm64 at {system.commits[-1][:12]}" in log, log[:2000]
    assert f"s3://{BUCKET}/logs/dag_id={DAG}/" in log, log[:2000]

    # The Deadline Alert (36 s here) posted while the run was still going: before its summary.
    texts = system.messages()
    overrun = [i for i, t in enumerate(texts) if "still running after" in t and run["dag_run_id"] in t]
    summary = [i for i, t in enumerate(texts) if "Summary: 54/54 jobs passed" in t]
    assert overrun and summary and overrun[0] < summary[0], texts
    assert f"<{stack.api}/dags/{DAG}/runs/" in texts[overrun[0]]  # a link a person can click


def expected_queue(task_id: str) -> str:
    """The shipped config: each arch builds on its CPU pool; amd64 tests on the GPU pool,
    arm64 tests (collect only) on the arm pool; the run's own tasks on the default queue."""
    group = task_id.split(".")[0]
    if group not in CELLS or task_id.endswith(".reruns.find"):
        return "default"
    if group.endswith("arm64"):
        return "cpu-arm-r8g-4xlarge"
    return "gpu-l40-amd64" if ".tests." in task_id else "cpu-amd-m5-4xlarge"


def test_a_rest_trigger_with_params_builds_and_tests_only_the_chosen_cells(system):
    stack = system.stack
    conf = {"frameworks": ["sglang", "trtllm"], "arches": ["arm64"]}
    resp = stack.request("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, resp.text
    run_id = system.runs["chosen"] = resp.json()["dag_run_id"]
    run = system.timed_wait("REST-triggered run, 2 cells", run_id)
    tis = stack.task_instances(DAG, run_id)
    assert run["state"] == "success"
    chosen = {"sglang_arm64", "trtllm_arm64"}
    for cell in CELLS:
        states = {tis[f"{cell}.{t}"]["state"] for t in CELL_TASKS} | {tis[f"{cell}.tests.{s}"]["state"] for s in SUITES}
        assert states == ({"success"} if cell in chosen else {"skipped"}), (cell, states)
    results = system.results(run_id)
    assert (results["passed"], results["total"]) == (18, 18)
    assert {r["task_id"].split(".")[0] for r in results["rows"]} == chosen
    assert all(r["tests"].get("collected", 0) > 0 for r in results["rows"] if r["kind"] == "test")


def test_a_backfill_of_three_missed_nights_builds_each_nights_commit(system):
    stack = system.stack
    began = time.monotonic()
    stack.airflow(
        "backfill", "create", "--dag-id", DAG,
        "--from-date", system.nights[0].isoformat(), "--to-date", system.nights[-1].isoformat(),
        "--dag-run-conf", json.dumps({"frameworks": ["vllm"]}),
    )  # fmt: skip
    backfill: list[dict] = []
    while len(backfill) < 3 and time.monotonic() - began < 60:
        backfill = [r for r in stack.runs(DAG) if r["run_type"] == "backfill"]
        time.sleep(1)
    assert sorted(datetime.fromisoformat(r["logical_date"]) for r in backfill) == system.nights
    for r in backfill:
        assert stack.wait_for_run(DAG, r["dag_run_id"])["state"] == "success", r["dag_run_id"]
    system.timings["backfill, 3 nights x 2 cells (s)"] = time.monotonic() - began

    ecr = system.ecr.client()
    for r in sorted(backfill, key=lambda r: r["logical_date"]):
        night = system.nights.index(datetime.fromisoformat(r["logical_date"]))
        commit = system.commits[night]
        assert stack.xcom(DAG, r["dag_run_id"], "resolve_source")["commit"] == commit
        for arch in ("amd64", "arm64"):
            pushed = stack.xcom(DAG, r["dag_run_id"], f"vllm_{arch}.push_runtime_ecr")["pushed"]
            run_tag = f"nightly-vllm-{arch}-run-{tag_safe_run_id(r['dag_run_id'])}"
            assert list(pushed) == [run_tag], pushed  # an older night pushes only its run tag
            assert ecr.image(REPO, run_tag).labels[LABEL_REVISION] == commit

    # The moving tags stay on the newest night that published each cell: the REST-triggered
    # "chosen" run is newer, but a manual run moves them only with publish on (H1).
    for cell in ("sglang_arm64", "trtllm_arm64"):
        skipped = stack.xcom(DAG, system.runs["chosen"], f"{cell}.push_runtime_ecr")["skipped"]
        assert "publish" in skipped[f"nightly-{cell.replace('_', '-')}"], skipped
    newest = {cell: system.runs["scheduled"] for cell in CELLS}
    for cell, run_id in newest.items():
        fw, arch = cell.split("_")
        for reg, task in ((system.ecr, "push_runtime_ecr"), (system.acr, "push_runtime_acr")):
            pushed = stack.xcom(DAG, run_id, f"{cell}.{task}")["pushed"]
            assert reg.client().image(REPO, f"nightly-{fw}-{arch}").digest == pushed[f"nightly-{fw}-{arch}"]
        framework = ecr.image(REPO, f"main-{fw}-framework-{arch}")
        assert framework.labels[LABEL_REVISION] == system.commits[-1], cell


def test_clearing_a_failed_test_task_reruns_only_it_against_the_same_image(system):
    stack = system.stack
    # Clear before the run's deadline, however long a busy machine takes to fail the run:
    # an hour ahead, where the scheduled run's 36 s was there to be overrun.
    system.set_deadline_hours(1.0)
    system.set_gpu_engine("unix:///run/nightly-ci-system-test-gpu-host-is-down.sock")
    conf = {"frameworks": ["trtllm"], "arches": ["amd64"], "publish": False}
    resp = stack.request("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    assert system.timed_wait("run with the GPU host down, 1 cell", run_id)["state"] == "failed"
    before = stack.task_instances(DAG, run_id)
    tests = [f"trtllm_amd64.tests.{s}" for s in SUITES]
    assert {before[t]["state"] for t in tests} == {"failed"}
    first = system.results(run_id)
    rows = {r["task_id"]: r for r in first["rows"]}
    assert {rows[t]["failure_class"] for t in tests} == {"infra"}, [rows[t] for t in tests]
    assert (first["passed"], first["total"]) == (5, 9)
    pinned = stack.xcom(DAG, run_id, "trtllm_amd64.push_runtime_ecr")["pinned"]
    unit = "trtllm_amd64.tests.unit"
    assert stack.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{unit}")["rendered_fields"]["image"] == pinned

    # The deadline of this run is still ahead (no overrun posted yet): the case where
    # Airflow 3.3.2's Clear answered 500 (apache/airflow#70368, fixed by the plugin).
    assert not [t for t in system.messages() if "still running after" in t and run_id in t]
    # The host is back: clear the unit suite (and what reads it: the summary, verdict, Slack).
    system.set_gpu_engine(system.engines["gpu"].url)
    began = time.monotonic()
    body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [unit], "include_downstream": True,
            "only_failed": False, "reset_dag_runs": True}  # fmt: skip
    resp = stack.request("POST", f"/dags/{DAG}/clearTaskInstances", json=body)
    assert resp.ok, resp.text
    cleared = {t["task_id"] for t in resp.json()["task_instances"]}
    reruns = {"trtllm_amd64.reruns.find", "trtllm_amd64.reruns.rerun"}  # the flake reruns read the suites too
    assert cleared == {unit, *reruns, "results_summary", "verdict", "notify_slack", "announce_regressions"}, cleared
    run = stack.wait_for_run(DAG, run_id)
    system.timings["cleared test task and summary re-run (s)"] = time.monotonic() - began
    after = stack.task_instances(DAG, run_id)
    assert after[unit]["state"] == "success" and after[unit]["try_number"] == before[unit]["try_number"] + 1
    for task_id, ti in after.items():
        if task_id not in cleared:
            assert (ti["state"], ti["try_number"]) == (before[task_id]["state"], before[task_id]["try_number"]), task_id
    assert run["state"] == "failed"  # the other three suites still failed

    # Same image digest: the retry ran the very image the run pushed.
    record = system.stored(run_id, "trtllm_amd64/test-unit/record.json")
    assert record["image"] == pinned and record["outcome"] == "passed"
    second = system.results(run_id)
    rows = {r["task_id"]: r for r in second["rows"]}
    assert rows[unit]["status"] == "success" and rows[unit]["failure_class"] is None
    assert rows[unit]["tests"]["passed"] > 0
    assert (second["passed"], second["total"]) == (6, 9)


def trigger(system: System, conf: dict) -> str:
    """A run of the nightly triggered through the REST API with CONF; its id."""
    resp = system.stack.request("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, resp.text
    return resp.json()["dag_run_id"]


def all_task_instances(system: System, dag_id: str, run_id: str) -> list[dict]:
    """Every task instance of the run, each map index of a mapped task on its own."""
    return system.stack.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")["task_instances"]


def wait_for_culprit_run(system: System, run_id: str, timeout: float = 900) -> dict:
    """The culprit DAG's run RUN_ID once it ended; it must first appear (a step's trigger makes it)."""
    deadline = time.monotonic() + timeout
    while system.stack.request("GET", f"/dags/{CULPRIT_DAG}/dagRuns/{run_id}").status_code == 404:
        system.stack.check_alive()
        assert time.monotonic() < deadline, (
            f"no run {run_id}: {[r['dag_run_id'] for r in system.stack.runs(CULPRIT_DAG)]}"
        )
        time.sleep(2)
    return system.stack.wait_for_run(CULPRIT_DAG, run_id, max(60.0, deadline - time.monotonic()))


def test_a_night_whose_commit_breaks_a_test_starts_the_culprit_finder_which_names_the_commit(system):
    stack = system.stack
    began = time.monotonic()
    stack.wait_for_dag(CULPRIT_DAG)
    system.set_gpu_engine(system.engines["gpu"].url)  # as test 1 left it (when run on its own)
    # Paused at creation here (compose unpauses every DAG): an operator turns them on once.
    for dag_id in (DAG, CULPRIT_DAG):
        assert stack.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False}).ok
    # The last good night: a triggered (manual) night compares with manual nights only, and
    # no earlier test ran this cell by hand, so one passes first, at the branch head.
    conf = {"frameworks": ["vllm"], "arches": ["amd64"]}
    good_id = trigger(system, conf)
    assert system.timed_wait("culprit: the last good night, 1 cell", good_id)["state"] == "success", system.failures(
        good_id
    )
    good = stack.xcom(DAG, good_id, "resolve_source")["commit"]
    # Six commits pushed on top; the fourth breaks the router, and so its unit test.
    commits = add_commits(system.root / "git" / "sample.git", 6, culprit_at=3)
    bad_id = trigger(system, conf)
    assert system.timed_wait("culprit: the night with a broken test, 1 cell", bad_id)["state"] == "failed"
    assert stack.xcom(DAG, bad_id, "resolve_source")["commit"] == commits[-1]
    tis = stack.task_instances(DAG, bad_id)
    assert tis["vllm_amd64.tests.unit"]["state"] == "failed", system.failures(bad_id)
    assert tis["announce_regressions"]["state"] == "success", system.task_log(bad_id, "announce_regressions")

    # The nightly's summary announced the regression: one event of its Asset, with the finding.
    query = urlencode({"source_dag_id": DAG, "source_run_id": bad_id})  # a run id's '+' is no space
    events = stack.get(f"/assets/events?{query}")["asset_events"]
    assert [e["name"] for e in events] == [f"{DAG}.regressions"], events
    (finding,) = events[0]["extra"]["findings"]
    assert (finding["cell"], finding["suite"], finding["tests"]) == ("vllm_amd64", "unit", [BROKEN_TEST])
    assert (finding["good"]["run_id"], finding["good"]["commit"]) == (good_id, good)
    assert "@sha256:" in finding["good"]["image"] and "@sha256:" in finding["bad"]["image"]

    # The scheduler started the finder on that event: a dispatch run, which started the search.
    waited = time.monotonic()
    dispatch: list[dict] = []
    while not dispatch and time.monotonic() - waited < 120:
        stack.check_alive()
        dispatch = [r for r in stack.runs(CULPRIT_DAG) if r["run_type"] == "asset_triggered"]
        time.sleep(2)
    assert len(dispatch) == 1, stack.runs(CULPRIT_DAG)
    run = wait_for_culprit_run(system, dispatch[0]["dag_run_id"])
    assert run["state"] == "success", system.failures(run["dag_run_id"], CULPRIT_DAG)
    dispatched = [t for t in all_task_instances(system, CULPRIT_DAG, run["dag_run_id"]) if t["task_id"] == "dispatch"]
    assert [t["state"] for t in dispatched] == ["success"], dispatched

    # Each step a run of its own, started by the step before, until one reports.
    steps: list[list[dict]] = []
    while len(steps) < 10:
        run_id = search_run_id(finding, len(steps))
        run = wait_for_culprit_run(system, run_id)
        assert run["state"] == "success", system.failures(run_id, CULPRIT_DAG)
        assert run["run_type"] == "operator_triggered", run  # TriggerDagRunOperator's (3.3)
        steps.append(all_task_instances(system, CULPRIT_DAG, run_id))
        # No task needed its retry (the DAG's default 1): a retry would hide a failure here.
        assert all(t["try_number"] <= 1 for t in steps[-1]), system.failures(run_id, CULPRIT_DAG)
        seconds = datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
        system.timings[f"culprit: search run {len(steps) - 1} (s)"] = seconds.total_seconds()
        states = {t["task_id"]: t["state"] for t in steps[-1] if t["map_index"] < 1}
        if states["report"] == "success":
            assert states["next_step"] == "skipped", states
            break
        assert (states["next_step"], states["report"]) == ("success", "skipped"), states
    system.timings["culprit: the finder's dispatch and search runs (s)"] = time.monotonic() - waited
    system.timings["culprit: whole test, 2 nights and the search (s)"] = time.monotonic() - began

    history = HistoryStore(stack.postgres.createdb_url(stack.history_conn["schema"]))
    try:
        (found,) = findings.load(history, DAG, bad_id)
    finally:
        history.close()
    assert (found.status, found.culprit, found.parent) == ("culprit", commits[3], commits[2]), found
    assert (found.good_commit, found.bad_commit, found.tests) == (good, commits[-1], (BROKEN_TEST,))
    assert (found.subject or "").endswith("route to the first worker only"), found
    # The replay on the good night's image, one bisection round (k = 3 of 6 commits: the
    # 1st, 3rd and 4th), the verification: a run each, and only the candidates built.
    assert [e["mode"] for e in found.evidence] == ["replay", "bisect", "bisect", "bisect", "verify", "verify"]
    assert (found.rounds, found.builds, len(steps)) == (1, 3, 3), found
    assert found.evidence[0]["image"] == finding["good"]["image"]
    verify = {e["commit"]: e["verdict"] for e in found.evidence if e["mode"] == "verify"}
    assert verify == {commits[3]: "bad", commits[2]: "good"}
    assert all(e["run_id"] == search_run_id(finding, e["round"] + (e["mode"] == "verify")) for e in found.evidence)

    # Builds and test runs took the culprit pool, on the queues of the cell's own pools (the
    # workers that reach its builder and GPU host); the tasks that only decide (what to
    # build, what to run, the common ones) the default queue and pool: no slot to wait for.
    placed = {(t["task_id"], t["queue"], t["pool"], t["hostname"]) for ts in steps for t in ts if t["hostname"]}
    hosts = {"gpu-l40-amd64": "gpu", "default": "coordinator", "cpu-amd-m5-4xlarge": "builder"}
    assert all(hosts[queue] == host for _, queue, _, host in placed), placed
    assert {p[:3] for p in placed if p[0].startswith("vllm_amd64.")} == {
        ("vllm_amd64.candidates", "default", "default_pool"),
        ("vllm_amd64.build", "cpu-amd-m5-4xlarge", "culprit"),
        ("vllm_amd64.runs", "default", "default_pool"),
        ("vllm_amd64.test", "gpu-l40-amd64", "culprit"),
    }, placed
    assert {(queue, pool) for task_id, queue, pool, _ in placed if "." not in task_id} == {("default", "default_pool")}

    # Slack: the finding, with the commit and its subject.
    posted = [t for t in system.messages() if "Culprit finder - vllm_amd64/unit" in t]
    assert len(posted) == 1, system.messages()
    assert "culprit found and verified" in posted[0] and commits[3][:12] in posted[0], posted
    assert "route to the first worker only" in posted[0], posted
