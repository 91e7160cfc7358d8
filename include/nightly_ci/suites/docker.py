"""A suite in a container on a Docker engine (a GPU host, or an arm64 builder for dry runs).

Built on the Docker provider's DockerHook: the engine and its TLS come from an Airflow
connection, one client serves the whole task (pull, run, read results, remove), and
nothing is mounted from the worker, so the engine may be on another host. The pool's
volumes are folders of the ENGINE's host (a model cache there), mounted read-only.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.errors import RegistryUnavailable
from include.nightly_ci.names import LABEL_CELL, LABEL_DAG, LABEL_RUN_ID, LABEL_SUITE
from include.nightly_ci.plan import Backoff, Registry, TaskSpec
from include.nightly_ci.records import placement
from include.nightly_ci.suites.base import GRACE, SuiteOperator, retrying

if TYPE_CHECKING:
    from airflow.providers.docker.hooks.docker import DockerHook
    from docker import APIClient

    from include.nightly_ci.suites.run import SuiteRun


class DockerSuiteOperator(SuiteOperator):
    """A suite in a container: GPUs by device_requests, hard CPU and memory limits."""

    ui_color = "#f3e8fd"

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
        docker_conn_id: str | None,
        registry: Registry,
        platform: str,
        backoff: Backoff,
        cpus: float | None = None,
        memory: str | None = None,
        network_mode: str | None = "none",
        startup_timeout_seconds: int = 1800,
        volumes: dict[str, str] | None = None,
        **kwargs: Any,
    ):
        # The pull has its own budget (M2): the suite's timeout counts from its container's
        # start, inside the container, so the task's timeout is the sum.
        startup = timedelta(seconds=startup_timeout_seconds)
        kwargs.setdefault("execution_timeout", startup + timedelta(minutes=timeout_minutes) + GRACE)
        # Explicit arguments win over the spec's placement: a mapped rerun comes with its own.
        super().__init__(**{**placement(spec), **kwargs})
        self.spec, self.store = spec, store
        self.framework, self.arch, self.suite, self.image = framework, arch, suite, image
        self.command, self.mode, self.marker = command, mode, marker
        self.workdir, self.junit_path, self.timeout_minutes, self.gpus = workdir, junit_path, timeout_minutes, gpus
        self.docker_conn_id = docker_conn_id
        self.registry = registry
        self.platform = platform
        self.backoff = backoff
        self.cpus = cpus
        self.memory = memory
        self.network_mode = network_mode  # "none" unless the pool gives its test code a network (M12)
        self.startup_timeout_seconds = startup_timeout_seconds
        self.volumes = dict(volumes or {})  # engine host folder -> container folder, read-only
        self._container: str | None = None

    @cached_property
    def hook(self) -> DockerHook:
        from include.nightly_ci.images.engine import engine_hook

        return engine_hook(self.docker_conn_id, timeout=self.timeout_minutes * 60 + 120)

    @property
    def engine(self) -> APIClient:
        return self.hook.api_client

    def _pull(self) -> None:
        """Pull the image (repo@digest) onto the runner's engine with the registry's
        credentials, within the pool's startup_timeout_seconds: a pull that takes longer
        is infra (RegistryUnavailable), and leaves the suite's own time untouched (M2)."""
        import threading

        from include.nightly_ci.images.engine import pull
        from include.nightly_ci.images.registries import registry_auth

        auth = registry_auth(self.registry)
        failed: list[BaseException] = []

        def pulling() -> None:
            try:
                retrying(
                    f"pull {self.image}",
                    lambda: pull(self.engine, self.image, auth, self.platform, self.log.info),
                    self.backoff,
                )
            except BaseException as exc:  # handed to the task's thread below
                failed.append(exc)

        worker = threading.Thread(target=pulling, name="nightly-ci-pull", daemon=True)
        worker.start()
        worker.join(self.startup_timeout_seconds)
        if worker.is_alive():
            raise RegistryUnavailable(
                f"pulling {self.image} onto engine {self.docker_conn_id or 'local'} took over "
                f"{self.startup_timeout_seconds} s (the pool's startup_timeout_seconds)"
            )
        if failed:
            raise failed[0]

    def execute_suite(self, context: Any, run: SuiteRun) -> None:
        from include.nightly_ci.suites.run import reap_expired, run_in_docker

        # Containers whose worker died go first: they may hold this engine's GPUs (H7).
        reap_expired(self.engine, self.dag_id, self.log.warning)
        self._pull()

        def remember(container: dict) -> None:
            self._container = container["Id"]  # for on_kill

        run_in_docker(
            self.engine,
            run,
            command=list(self.command),
            workdir=self.workdir,
            junit_path=self.junit_path,
            timeout_sec=self.timeout_minutes * 60,
            gpus=self.gpus,
            cpus=self.cpus,
            memory=self.memory,
            network_mode=self.network_mode,
            volumes=self.volumes,
            env=self.container_env(),
            labels={
                LABEL_DAG: self.dag_id,
                LABEL_CELL: self.spec.cell or "",
                LABEL_SUITE: self.suite,
                LABEL_RUN_ID: context["dag_run"].run_id,
            },
            sink=self.log.info,
            on_container=remember,
        )

    def on_kill(self) -> None:
        """A killed task removes its container (run_in_docker's own cleanup may not have
        run). It never raises: the container may be gone already (run_in_docker removed
        it before Airflow's timeout got here, M2), or the engine with it."""
        if self._container is None:
            return
        import docker.errors

        try:
            self.engine.remove_container(self._container, force=True)
        except docker.errors.NotFound:
            pass  # removed already
        except Exception as exc:  # its deadline label lets the next suite's reaper remove it
            self.log.warning("Could not remove container %s on kill: %s", self._container, exc)
