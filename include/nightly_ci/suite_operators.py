"""The test tasks: one suite of one cell, in the exact image the run pushed (by digest).

Docker pools use the provider's DockerOperator (the engine and its TLS from an Airflow
connection). Kubernetes pools run the provider's KubernetesPodOperator; it is created at
run time so that parsing the DAG never imports the Kubernetes client (about 0.7 s).
"""

from __future__ import annotations

import base64
import gzip
import shlex
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import BaseOperator

from include.nightly_ci.links import ARTIFACTS_KEY, JUnitLink, TestOutputLink
from include.nightly_ci.plan import JUNIT_FILE, Cell, Plan, TestJob, artifact_key
from include.nightly_ci.suites import COLLECTED, NO_TESTS, PASSED, SuiteRun
from include.nightly_ci.task_records import RecordedTask

# Extra time the task gets beyond the suite's own timeout: pulling, collecting results.
GRACE = timedelta(minutes=10)


def image_template(cell: Cell) -> str:
    """The image by digest, rendered at run time from the push task's XCom (shown in the UI)."""
    return "{{ ti.xcom_pull(task_ids='" + cell.test_push_task_id + "')['pinned'] }}"


class _SuiteMixin(RecordedTask):
    """What both backends share: selection, pulling by digest, keeping the results."""

    plan: Plan
    cell: Cell
    job: TestJob
    log: Any
    record_stage = "test"
    operator_extra_links = (JUnitLink(), TestOutputLink())
    _suite_record: dict[str, Any] | None = None

    def record_extra(self) -> dict[str, Any]:
        r = self._suite_record or {}
        return {k: r[k] for k in ("outcome", "counts", "image", "artifacts", "exit_code") if k in r}

    def _skip_unless_selected(self, context: Any) -> None:
        from include.nightly_ci.operators import skip_unless_selected

        skip_unless_selected(context, self.cell)

    def _new_run(self, context: Any, image: str) -> SuiteRun:
        """A new suite run; first it tells the UI's links where its results will be."""
        from include.nightly_ci.artifacts import plan_store

        store = plan_store(self.plan)
        stage = f"test-{self.job.suite}"
        files = {"junit": JUNIT_FILE, "output": "output.log", "record": "record.json"}
        run_id = context["dag_run"].run_id
        urls = {name: str(store / artifact_key(run_id, self.cell, stage, file)) for name, file in files.items()}
        context["ti"].xcom_push(key=ARTIFACTS_KEY, value=urls)
        return SuiteRun(self.cell.group_id, self.job.suite, self.job.mode, image, self.job.marker)

    def _keep(self, context: Any, run: SuiteRun) -> dict[str, Any]:
        """Write output, JUnit and the record to the artifact store; the record."""
        from include.nightly_ci.artifacts import plan_store, write_json, write_text

        store = plan_store(self.plan)

        def key(name: str) -> str:
            return artifact_key(context["dag_run"].run_id, self.cell, f"test-{self.job.suite}", name)

        record = run.record()
        record["artifacts"] = {"output": write_text(store, key("output.log"), run.output)}
        if run.junit:
            record["artifacts"]["junit"] = write_text(store, key(JUNIT_FILE), run.junit)
        record["artifacts"]["record"] = str(store / key("record.json"))
        write_json(store, key("record.json"), record)
        self._suite_record = record
        self.log.info("Suite %s: %s %s; artifacts: %s", self.job.suite, run.outcome, run.counts, record["artifacts"])
        return record

    def _finish(self, record: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException, AirflowSkipException

        outcome = record["outcome"]
        if outcome in (PASSED, COLLECTED):
            return record
        if outcome == NO_TESTS and self.job.mode == "run":
            raise AirflowSkipException(f"no tests selected by -m {self.job.marker!r} (pytest exit 5)")
        raise AirflowException(
            f"suite {self.job.suite} of {self.cell.group_id}: {outcome} "
            f"(exit code {record['exit_code']}, {record['counts']}){': ' + record['error'] if record['error'] else ''}"
        )

    def _pull(self, image: str) -> None:
        """Pull IMAGE (repo@digest) onto the runner's engine with the registry's credentials."""
        from include.nightly_ci.images import engine_client, pull
        from include.nightly_ci.registries import registry_auth, retry_transient

        b = self.plan.build
        auth = registry_auth(self.plan.registries[self.cell.test_registry])
        client = engine_client(self.job.runner.conn_id)
        retry_transient(
            f"pull {image}",
            lambda: pull(client, image, auth, self.cell.platform, self.log.info),
            attempts=b.push_attempts,
            backoff=b.push_backoff_seconds,
            backoff_max=b.push_backoff_max_seconds,
        )


class DockerSuiteOperator(_SuiteMixin, DockerOperator):
    """A suite in a container on a Docker engine, GPUs by device_requests."""

    ui_color = "#f3e8fd"

    def __init__(self, *, plan: Plan, cell: Cell, job: TestJob, **kwargs: Any):
        super().__init__(
            image=image_template(cell),
            command=list(job.command),
            working_dir=plan.workdir,
            mount_tmp_dir=False,  # the engine may be remote: nothing is mounted from the worker
            auto_remove="force",  # on_kill removes the container too
            labels={"dev.nightly-ci.cell": cell.group_id, "dev.nightly-ci.suite": job.suite},
            execution_timeout=timedelta(minutes=job.timeout_minutes) + GRACE,
            pool=job.pool,
            pool_slots=job.pool_slots,
            **kwargs,
        )
        self.plan, self.cell, self.job = plan, cell, job

    @cached_property
    def hook(self):
        from include.nightly_ci.images import engine_hook

        return engine_hook(self.job.runner.conn_id, timeout=self.job.timeout_minutes * 60 + 120)

    def run(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.suites import run_in_docker

        self._skip_unless_selected(context)
        self._pull(self.image)
        run = self._new_run(context, self.image)
        r = self.job.runner

        def remember(container: dict) -> None:
            self.container = container  # for DockerOperator.on_kill

        try:
            run_in_docker(
                self.cli,
                run,
                command=list(self.job.command),
                workdir=self.plan.workdir,
                junit_path=None if self.job.mode == "collect" else f"{self.plan.results_dir}/{JUNIT_FILE}",
                timeout_sec=self.job.timeout_minutes * 60,
                gpus=self.job.gpus if r.gpus else 0,
                cpus=r.cpus,
                memory=r.memory,
                network_mode=r.network_mode,
                labels={**self.labels, "dev.nightly-ci.run-id": context["dag_run"].run_id},
                sink=self.log.info,
                on_container=remember,
            )
        except Exception as exc:  # the engine refused (a GPU request, a missing runtime): keep what we know
            run.error = f"{type(exc).__name__}: {exc}"
        return self._finish(self._keep(context, run))


# The pod's entry point: pytest under `timeout`, then the results as the XCom sidecar's
# return.json, so that nothing but the Kubernetes API carries them back.
_POD_SCRIPT = """\
cd {workdir}
mkdir -p {results_dir}
timeout --signal=TERM --kill-after=30 {timeout} {command} > /tmp/pytest-output.log 2>&1
rc=$?
cat /tmp/pytest-output.log
mkdir -p /airflow/xcom
python3 - "$rc" <<'PY'
import base64, gzip, json, os, sys
def packed(path):
    if not os.path.exists(path):
        return None
    return base64.b64encode(gzip.compress(open(path, "rb").read())).decode()
rc = int(sys.argv[1])
json.dump({{"exit_code": rc, "timed_out": rc in (124, 137), "output": packed("/tmp/pytest-output.log"),
           "junit": packed("{junit}")}}, open("/airflow/xcom/return.json", "w"))
PY
"""


def pod_script(job: TestJob, workdir: str, results_dir: str) -> str:
    return _POD_SCRIPT.format(
        workdir=shlex.quote(workdir),
        results_dir=shlex.quote(results_dir),
        timeout=f"{job.timeout_minutes * 60}s",
        command=shlex.join(job.command),
        junit=f"{results_dir}/{JUNIT_FILE}",
    )


def unpack_pod_result(result: dict[str, Any], run: SuiteRun) -> SuiteRun:
    def text(blob: str | None) -> str | None:
        return gzip.decompress(base64.b64decode(blob)).decode(errors="replace") if blob else None

    run.exit_code = result["exit_code"]
    run.timed_out = bool(result["timed_out"])
    run.output = text(result.get("output")) or ""
    run.junit = text(result.get("junit"))
    return run


class KubernetesSuiteOperator(_SuiteMixin, BaseOperator):
    """A suite in a pod: nvidia.com/gpu limits, the pool's node selector, tolerations and
    pull secrets, and a pod-startup timeout separate from the suite's own timeout."""

    template_fields = ("image",)
    ui_color = "#e8f5fd"

    def __init__(self, *, plan: Plan, cell: Cell, job: TestJob, **kwargs: Any):
        super().__init__(
            execution_timeout=timedelta(minutes=job.timeout_minutes, seconds=job.runner.startup_timeout_seconds)
            + GRACE,
            pool=job.pool,
            pool_slots=job.pool_slots,
            **kwargs,
        )
        self.plan, self.cell, self.job = plan, cell, job
        self.image = image_template(cell)
        self._pod_operator = None

    def pod_operator(self, image: str):
        """The KubernetesPodOperator this task runs (its dry_run() shows the pod)."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import models as k8s

        r, job = self.job.runner, self.job
        limits: dict[str, str] = {}
        if r.gpus and job.gpus:
            limits["nvidia.com/gpu"] = str(job.gpus)
        if r.cpus:
            limits["cpu"] = str(r.cpus)
        if r.memory:
            limits["memory"] = r.memory
        return KubernetesPodOperator(
            task_id=f"{self.task_id}.pod",
            name=f"nightly-{self.cell.group_id}-{job.suite}".replace("_", "-"),
            namespace=r.namespace,
            kubernetes_conn_id=r.conn_id or "kubernetes_default",
            image=image,
            cmds=["bash", "-c"],
            arguments=[pod_script(job, self.plan.workdir, self.plan.results_dir)],
            labels={
                "nightly-ci/cell": self.cell.group_id.replace("_", "-"),
                "nightly-ci/suite": job.suite.replace("_", "-"),
            },
            container_resources=k8s.V1ResourceRequirements(limits=limits, requests=dict(limits)),
            node_selector=dict(r.node_selector),
            tolerations=[k8s.V1Toleration(**dict(t)) for t in r.tolerations],
            image_pull_secrets=[k8s.V1LocalObjectReference(name=s) for s in r.image_pull_secrets],
            startup_timeout_seconds=r.startup_timeout_seconds,
            # The backstop if `timeout` in the pod can't stop pytest; counted from the pod's
            # start on its node, so waiting for a GPU node is not part of it.
            active_deadline_seconds=job.timeout_minutes * 60 + 300,
            get_logs=True,
            do_xcom_push=True,
            on_finish_action="delete_pod",
            image_pull_policy="IfNotPresent",
        )

    def run(self, context: Any) -> dict[str, Any]:
        self._skip_unless_selected(context)
        run = self._new_run(context, self.image)
        self._pod_operator = self.pod_operator(self.image)
        try:
            unpack_pod_result(self._pod_operator.execute(context), run)
        except Exception as exc:  # the pod never started, was evicted, or its node went away
            run.error = f"{type(exc).__name__}: {exc}"
        return self._finish(self._keep(context, run))

    def on_kill(self) -> None:
        if self._pod_operator is not None:
            self._pod_operator.on_kill()


def suite_operator(plan: Plan, cell: Cell, job: TestJob, **kwargs: Any) -> BaseOperator:
    cls = KubernetesSuiteOperator if job.runner.backend == "kubernetes" else DockerSuiteOperator
    return cls(plan=plan, cell=cell, job=job, **kwargs)


__all__ = ["DockerSuiteOperator", "KubernetesSuiteOperator", "pod_script", "suite_operator", "unpack_pod_result"]
