"""A suite in a pod on a Kubernetes cluster: the provider's KubernetesPodOperator, created
when the task runs so that parsing the DAG never imports the Kubernetes client (about 0.7 s).

The pod runs pytest under `timeout` and hands back its exit code, output and JUnit
through the XCom sidecar's return.json: nothing but the Kubernetes API carries them.
"""

from __future__ import annotations

import base64
import gzip
import shlex
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.plan import TaskSpec
from include.nightly_ci.records import placement
from include.nightly_ci.suites.base import GRACE, SuiteOperator

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from include.nightly_ci.suites.run import SuiteRun

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
           "junit": packed({junit})}}, open("/airflow/xcom/return.json", "w"))
PY
"""


def pod_script(command: Sequence[str], workdir: str, junit_path: str | None, timeout_minutes: int) -> str:
    """The pod's bash script: COMMAND in WORKDIR under a TIMEOUT_MINUTES `timeout`."""
    results_dir = junit_path.rsplit("/", 1)[0] if junit_path else "/tmp"
    return _POD_SCRIPT.format(
        workdir=shlex.quote(workdir),
        results_dir=shlex.quote(results_dir),
        timeout=f"{timeout_minutes * 60}s",
        command=shlex.join(command),
        junit=repr(junit_path or "/nonexistent"),
    )


def unpack_pod_result(result: dict[str, Any], run: SuiteRun) -> SuiteRun:
    def text(blob: str | None) -> str | None:
        return gzip.decompress(base64.b64decode(blob)).decode(errors="replace") if blob else None

    run.exit_code = result["exit_code"]
    run.timed_out = bool(result["timed_out"])
    run.output = text(result.get("output")) or ""
    run.junit = text(result.get("junit"))
    return run


class KubernetesSuiteOperator(SuiteOperator):
    """A suite in a pod: nvidia.com/gpu limits, the pool's node selector, tolerations and
    pull secrets, and a pod-startup timeout separate from the suite's own timeout."""

    ui_color = "#e8f5fd"

    def __init__(
        self,
        *,
        spec: TaskSpec,
        store: ArtifactStore,
        framework: str,
        arch: str,
        suite: str,
        image: str,
        command: tuple[str, ...],
        mode: str,
        marker: str,
        workdir: str,
        junit_path: str | None,
        timeout_minutes: int,
        gpus: int,
        kubernetes_conn_id: str | None,
        namespace: str,
        cpus: float | None = None,
        memory: str | None = None,
        node_selector: dict[str, str] | None = None,
        tolerations: list[dict[str, str]] | None = None,
        image_pull_secrets: list[str] | None = None,
        startup_timeout_seconds: int = 1800,
        **kwargs: Any,
    ):
        # The pod may wait for a node (GPU scale-up) before the suite's own time starts.
        startup = timedelta(seconds=startup_timeout_seconds)
        kwargs.setdefault("execution_timeout", timedelta(minutes=timeout_minutes) + startup + GRACE)
        super().__init__(**placement(spec), **kwargs)
        self.spec, self.store = spec, store
        self.framework, self.arch, self.suite, self.image = framework, arch, suite, image
        self.command, self.mode, self.marker = command, mode, marker
        self.workdir, self.junit_path, self.timeout_minutes, self.gpus = workdir, junit_path, timeout_minutes, gpus
        self.kubernetes_conn_id = kubernetes_conn_id
        self.namespace = namespace
        self.cpus = cpus
        self.memory = memory
        self.node_selector = node_selector or {}
        self.tolerations = tolerations or []
        self.image_pull_secrets = image_pull_secrets or []
        self.startup_timeout_seconds = startup_timeout_seconds
        self._pod_operator: KubernetesPodOperator | None = None

    def pod_operator(self, image: str) -> KubernetesPodOperator:
        """The KubernetesPodOperator this task runs (its dry_run() shows the pod)."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import models as k8s

        limits: dict[str, str] = {}
        if self.gpus:
            limits["nvidia.com/gpu"] = str(self.gpus)
        if self.cpus:
            limits["cpu"] = str(self.cpus)
        if self.memory:
            limits["memory"] = self.memory
        cell = (self.spec.cell or "").replace("_", "-")
        return KubernetesPodOperator(
            task_id=f"{self.task_id}.pod",
            name=f"nightly-{cell}-{self.suite}".replace("_", "-"),
            namespace=self.namespace,
            kubernetes_conn_id=self.kubernetes_conn_id or "kubernetes_default",
            image=image,
            cmds=["bash", "-c"],
            arguments=[pod_script(self.command, self.workdir, self.junit_path, self.timeout_minutes)],
            labels={"nightly-ci/cell": cell, "nightly-ci/suite": self.suite.replace("_", "-")},
            container_resources=k8s.V1ResourceRequirements(limits=limits, requests=dict(limits)),
            node_selector=dict(self.node_selector),
            tolerations=[k8s.V1Toleration(**t) for t in self.tolerations],
            image_pull_secrets=[k8s.V1LocalObjectReference(name=s) for s in self.image_pull_secrets],
            startup_timeout_seconds=self.startup_timeout_seconds,
            # The backstop if `timeout` in the pod can't stop pytest; counted from the pod's
            # start on its node, so waiting for a GPU node is not part of it.
            active_deadline_seconds=self.timeout_minutes * 60 + 300,
            get_logs=True,
            do_xcom_push=True,
            on_finish_action="delete_pod",
            image_pull_policy="IfNotPresent",
        )

    def execute_suite(self, context: Any, run: SuiteRun) -> None:
        self._pod_operator = self.pod_operator(self.image)
        unpack_pod_result(self._pod_operator.execute(context), run)

    def on_kill(self) -> None:
        if self._pod_operator is not None:
            self._pod_operator.on_kill()
