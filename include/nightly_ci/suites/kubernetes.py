"""A suite in a pod on a Kubernetes cluster: the provider's KubernetesPodOperator, created
when the task runs so that parsing the DAG never imports the Kubernetes client (about 0.7 s).

The pod runs pytest under `timeout`, its output straight to the container's log, which
the provider streams into the task log as it comes; the script's last line carries the
exit code and the JUnit. Nothing but the pod's log comes back: no XCom sidecar (an image
from Docker Hub), so whatever pytest printed before a kill, an eviction or a lost node
is kept (M3).
"""

from __future__ import annotations

import base64
import gzip
import json
import shlex
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.plan import Registry, TaskSpec
from include.nightly_ci.records import placement
from include.nightly_ci.suites.base import GRACE, SuiteOperator

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from include.nightly_ci.images.registries import RegistryAuth
    from include.nightly_ci.suites.run import SuiteRun

# The line that ends the pod's log: what the script hands back.
RESULT_MARKER = "##nightly-ci-result## "
# Kubernetes counts active_deadline_seconds from the kubelet's ack, before the image pull:
# the backstop is the suite's timeout + the pull's budget (startup_timeout_seconds) + this.
DEADLINE_SLACK_SEC = 300
# What a pool without a network gets: a NetworkPolicy of the cluster's selects it (M12).
NETWORK_LABEL = "nightly-ci/network"

# The pod's entry point: pytest under `timeout`, its output to the log as it comes, then
# one line with the exit code, the time taken and the JUnit (gzip, base64).
_POD_SCRIPT = """\
export PYTHONUNBUFFERED=1
cd {workdir}
mkdir -p {results_dir}
started=$(date +%s)
timeout --signal=TERM --kill-after=30 {timeout} {command} 2>&1
rc=$?
elapsed=$(( $(date +%s) - started ))
python3 - "$rc" "$elapsed" <<'PY'
import base64, gzip, json, os, sys
path = {junit}
junit = base64.b64encode(gzip.compress(open(path, "rb").read())).decode() if os.path.exists(path) else None
result = {{"exit_code": int(sys.argv[1]), "elapsed_sec": int(sys.argv[2]), "junit": junit}}
print({marker!r} + json.dumps(result), flush=True)
PY
"""


def pod_script(command: Sequence[str], workdir: str, junit_path: str | None, timeout_sec: int) -> str:
    """The pod's bash script: COMMAND in WORKDIR under a TIMEOUT_SEC `timeout`."""
    results_dir = junit_path.rsplit("/", 1)[0] if junit_path else "/tmp"
    return _POD_SCRIPT.format(
        workdir=shlex.quote(workdir),
        results_dir=shlex.quote(results_dir),
        timeout=f"{timeout_sec}s",
        command=shlex.join(command),
        junit=repr(junit_path or "/nonexistent"),
        marker=RESULT_MARKER,
    )


def fill_from_pod_log(lines: Iterable[str], run: SuiteRun, timeout_sec: float) -> bool:
    """RUN's output, exit code, timeout and JUnit from the pod's log lines; whether the
    script's result line was there (it is not when the pod was killed before it ended)."""
    from include.nightly_ci.suites.run import deadline_fired

    output, result = [], None
    for line in lines:
        # After a line pytest left unfinished (a hanging test's name), the result shares it.
        before, marker, after = line.partition(RESULT_MARKER)
        if before or not marker:
            output.append(before)
        if marker:
            result = json.loads(after)
    run.output = "\n".join(output) + ("\n" if output else "")
    if result is None:
        return False
    run.exit_code = int(result["exit_code"])
    run.timed_out = deadline_fired(run.exit_code, float(result["elapsed_sec"]), timeout_sec)
    junit = result.get("junit")
    run.junit = gzip.decompress(base64.b64decode(junit)).decode(errors="replace") if junit else None
    return True


def pull_secret_body(name: str, auth: RegistryAuth) -> dict[str, Any]:
    """A docker-registry secret NAME with AUTH's credentials (for ECR, EcrHook's token)."""
    login = f"{auth.username}:{auth.password}"
    entry = {"username": auth.username, "password": auth.password, "auth": base64.b64encode(login.encode()).decode()}
    config = json.dumps({"auths": {auth.host: entry}})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "nightly-ci"}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }


def refresh_pull_secret(core_v1: Any, namespace: str, body: dict[str, Any]) -> None:
    """Write BODY (a secret) into NAMESPACE: replace it, or create it the first time."""
    from kubernetes.client.rest import ApiException

    name = body["metadata"]["name"]
    try:
        core_v1.replace_namespaced_secret(name=name, namespace=namespace, body=body)
    except ApiException as exc:
        if exc.status != 404:
            raise
        core_v1.create_namespaced_secret(namespace=namespace, body=body)


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
        network: bool = False,
        registry: Registry | None = None,
        pull_secret: str | None = None,
        volumes: dict[str, str] | None = None,
        **kwargs: Any,
    ):
        # The pod may wait for a node (GPU scale-up) before the suite's own time starts.
        startup = timedelta(seconds=startup_timeout_seconds)
        kwargs.setdefault("execution_timeout", timedelta(minutes=timeout_minutes) + startup + GRACE)
        # Explicit arguments win over the spec's placement: a mapped rerun comes with its own.
        super().__init__(**{**placement(spec), **kwargs})
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
        self.network = network
        self.registry = registry  # where the image comes from: pull_secret's credentials
        self.pull_secret = pull_secret
        self.volumes = dict(volumes or {})  # node folder -> container folder, read-only
        self._pod_operator: KubernetesPodOperator | None = None
        self._lines: list[str] = []  # the pod's log, as the provider streams it

    def pod_operator(self, image: str) -> KubernetesPodOperator:
        """The KubernetesPodOperator this task runs (its dry_run() shows the pod)."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import models as k8s

        lines = self._lines
        limits: dict[str, str] = {}
        if self.gpus:
            limits["nvidia.com/gpu"] = str(self.gpus)
        if self.cpus:
            limits["cpu"] = str(self.cpus)
        if self.memory:
            limits["memory"] = self.memory
        cell = (self.spec.cell or "").replace("_", "-")
        labels = {"nightly-ci/cell": cell, "nightly-ci/suite": self.suite.replace("_", "-")}
        if not self.network:
            labels[NETWORK_LABEL] = "none"  # the pod spec can't cut its network; a NetworkPolicy can
        secrets = list(dict.fromkeys([*self.image_pull_secrets, *([self.pull_secret] if self.pull_secret else [])]))
        volumes, mounts = host_volumes(self.volumes)
        return KubernetesPodOperator(
            task_id=f"{self.task_id}.pod",
            name=f"nightly-{cell}-{self.suite}".replace("_", "-"),
            namespace=self.namespace,
            kubernetes_conn_id=self.kubernetes_conn_id or "kubernetes_default",
            image=image,
            cmds=["bash", "-c"],
            arguments=[pod_script(self.command, self.workdir, self.junit_path, self.timeout_minutes * 60)],
            labels=labels,
            env_vars=[k8s.V1EnvVar(name=k, value=v) for k, v in self.container_env().items()],
            container_resources=k8s.V1ResourceRequirements(limits=limits, requests=dict(limits)),
            node_selector=dict(self.node_selector),
            tolerations=[k8s.V1Toleration(**t) for t in self.tolerations],
            image_pull_secrets=[k8s.V1LocalObjectReference(name=s) for s in secrets],
            volumes=volumes,
            volume_mounts=mounts,
            startup_timeout_seconds=self.startup_timeout_seconds,
            # The backstop if `timeout` in the pod can't stop pytest. Kubernetes counts it
            # from the kubelet's ack, before the image pull (M3): the pull's budget is in it.
            # Waiting for a GPU node comes before that, and is not.
            active_deadline_seconds=self.timeout_minutes * 60 + self.startup_timeout_seconds + DEADLINE_SLACK_SEC,
            # Code from any git_ref gets no API token of the namespace's service account (M12).
            automount_service_account_token=False,
            get_logs=True,  # streamed into the task log as pytest prints it
            callbacks=_collector(lines),  # and kept: output.log and the result line
            do_xcom_push=False,  # no sidecar: its image comes from Docker Hub
            on_finish_action="delete_pod",
            image_pull_policy="IfNotPresent",
        )

    def execute_suite(self, context: Any, run: SuiteRun) -> None:
        if self.pull_secret:
            self._refresh_pull_secret()
        self._lines.clear()
        self._pod_operator = self.pod_operator(self.image)
        try:
            self._pod_operator.execute(context)
        finally:  # a pod killed before its result line still leaves what it printed
            reported = fill_from_pod_log(self._lines, run, self.timeout_minutes * 60)
        if not reported:
            run.error = "the pod ended without its result line (killed, evicted or its node lost)"

    def _refresh_pull_secret(self) -> None:
        """Fresh credentials of the image's registry in the pod's pull secret, right before
        the pod: an ECR token lasts 12 h, so a secret written once expires (M3)."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        from include.nightly_ci.images.registries import registry_auth

        assert self.pull_secret is not None and self.registry is not None  # the DAG passes both
        body = pull_secret_body(self.pull_secret, registry_auth(self.registry))
        hook = KubernetesHook(conn_id=self.kubernetes_conn_id or "kubernetes_default")
        refresh_pull_secret(hook.core_v1_client, self.namespace, body)
        self.log.info("Refreshed pull secret %s/%s for %s", self.namespace, self.pull_secret, self.registry.name)

    def on_kill(self) -> None:
        if self._pod_operator is not None:
            self._pod_operator.on_kill()


def host_volumes(folders: dict[str, str]) -> tuple[list[Any], list[Any]]:
    """FOLDERS (node folder -> container folder) as hostPath volumes and their read-only
    mounts. Type Directory: a folder missing on the node fails the pod's start, rather
    than the kubelet making an empty one that hides the mistake."""
    from kubernetes.client import models as k8s

    volumes, mounts = [], []
    for i, (host, target) in enumerate(sorted(folders.items())):
        name = f"nightly-ci-host-{i}"  # a DNS label, whatever the paths hold
        volumes.append(k8s.V1Volume(name=name, host_path=k8s.V1HostPathVolumeSource(path=host, type="Directory")))
        mounts.append(k8s.V1VolumeMount(name=name, mount_path=target, read_only=True))
    return volumes, mounts


def _collector(lines: list[str]) -> type:
    """A provider callback that keeps every line the pod's main container logs in LINES."""
    from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback

    class Collect(KubernetesPodOperatorCallback):
        @staticmethod
        def progress_callback(*, line: str, container_name: str = "base", **_: Any) -> None:
            if container_name == "base":
                lines.extend(line.split("\n"))

    return Collect
