"""The typed model of the nightly matrix YAML: one pydantic model per section.

Every field has a description: the JSON schema (include/config/nightly_ci.schema.json)
and the configuration tables of the README and docs/configuration.md are generated from
them (`python -m include.nightly_ci schema`), and a test fails when either drifts.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, model_validator

from include.nightly_ci.config.culprit import CulpritSettings
from include.nightly_ci.config.history import HistorySettings, QuarantineItem
from include.nightly_ci.config.sections import BuildSecret, BuildSettings, SlackSettings
from include.nightly_ci.config.types import (
    BuildArgs,
    ConnId,
    GitRef,
    HostPath,
    ImagePath,
    Name,
    Platform,
    PoolName,
    QueueName,
    RelPath,
    Repository,
)
from include.nightly_ci.config.types import Model as _Model

# The plan and the tests take these from here, too.
__all__ = [
    "BuildSecret",
    "BuildSettings",
    "CulpritSettings",
    "HistorySettings",
    "QuarantineItem",
    "SlackSettings",
]


class DagSettings(_Model):
    """The nightly DAG itself."""

    dag_id: Name = Field("nightly_ci", description="The DAG id; the retention DAG is `{dag_id}_retention`.")
    schedule: str = Field("0 8 * * *", description="Cron expression, UTC (08:00 UTC is midnight PST).")
    start_date: date = Field(date(2026, 1, 1), description="The first night the DAG may run.")
    catchup: bool = Field(False, description="Run missed nights by itself; off: backfill them explicitly.")
    max_active_runs: int = Field(1, ge=1, description="Runs of the DAG at once.")
    owner: str = Field("ci-infra", description="The tasks' owner in the Airflow UI.")
    tags: list[str] = Field(["nightly", "ci"], description="DAG tags in the Airflow UI.")


class Source(_Model):
    """The repository the nightly builds."""

    repository: str = Field(
        min_length=1,
        description="Git URL, or a path relative to the config file; never with credentials in it "
        "(it is shown in the DAG doc and stamped on every image): see conn_id.",
    )
    conn_id: ConnId | None = Field(
        None,
        description="A private repository's Airflow connection: for https://, login and password are the user "
        "and token (login empty: x-access-token); for ssh, the private key in extra private_key (or the "
        "password), the server's key in extra host_key. null: a public or local repository.",
    )
    branch: GitRef = Field("main", description="The branch a scheduled run builds the head of.")
    dockerfile: str = Field(
        "container/Dockerfile.{framework}",
        description="The Dockerfile, relative to the repository; `{framework}` and `{arch}` name the cell's.",
    )
    context: RelPath = Field(".", description="The build context, relative to the repository.")
    timeout_seconds: int = Field(
        600, ge=5, le=3600, description="Every git command (fetch, clone) ends within this: a stalled server fails."
    )


class FrameworkSettings(_Model):
    """One framework: a key under `frameworks` (vllm, sglang, trtllm)."""

    build_args: BuildArgs = Field({}, description="Build args for every arch of this framework.")


class Builder(_Model):
    """The Docker engine that builds an arch."""

    conn_id: ConnId | None = Field(
        None, description="A Docker engine connection (tcp:// or unix://, TLS in extras); null: the worker's engine."
    )


class ArchSettings(_Model):
    """One architecture: a key under `arches` (amd64, arm64)."""

    platform: Platform = Field(description="The build platform, os/arch[/variant].")
    build_pool: PoolName = Field(description="The pool (and queue) of this arch's builds and pushes.")
    test_pool: PoolName = Field(description="The pool (and queue) of this arch's test suites.")
    test_mode: Literal["run", "collect"] = Field(
        "run", description="`run`: the suites run; `collect`: `pytest --collect-only` (no GPU runners)."
    )
    builder: Builder = Field(default_factory=Builder, description="The engine that builds this arch.")
    build_args: BuildArgs = Field({}, description="Build args for every framework on this arch.")


class Toleration(_Model):
    """A Kubernetes toleration of a test pod."""

    key: str = Field(description="The taint key.")
    operator: Literal["Exists", "Equal"] = Field("Exists", description="Exists or Equal.")
    value: str | None = Field(None, description="The taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="The taint effect; null: any."
    )


class Runner(_Model):
    """Where a pool's test tasks run: a Docker engine or a Kubernetes cluster."""

    backend: Literal["docker", "kubernetes"] = Field("docker", description="`docker` or `kubernetes`.")
    conn_id: ConnId | None = Field(
        None,
        description="docker: an engine connection; kubernetes: a kubernetes connection. "
        "null: the local engine or the in-cluster config.",
    )
    gpus: bool = Field(True, description="Request the suite's GPUs (device_requests or nvidia.com/gpu).")
    cpus: float | None = Field(None, gt=0, description="A hard CPU limit per suite.")
    memory: str | None = Field(None, description="A memory limit per suite (docker: 64g; kubernetes: 64Gi).")
    network: bool = Field(
        False,
        description="Give the test code a network. false: docker containers run with network_mode none; "
        "kubernetes pods carry the label nightly-ci/network=none for the cluster's NetworkPolicy to isolate.",
    )
    network_mode: str | None = Field(
        None,
        description="docker only, with network: true: the container's network (host, a network's name); "
        "null: the engine's default.",
    )
    namespace: str = Field("default", description="kubernetes only: the namespace of the test pods.")
    node_selector: dict[str, str] = Field({}, description="kubernetes only: the pods' node selector.")
    tolerations: list[Toleration] = Field([], description="kubernetes only: the pods' tolerations.")
    image_pull_secrets: list[str] = Field([], description="kubernetes only: secrets the pods pull with.")
    pull_secret: str | None = Field(
        None,
        description="kubernetes only: a docker-registry secret each test task writes right before its pod "
        "with fresh credentials of the test registry (an ECR token lasts 12 h), and pulls with.",
    )
    startup_timeout_seconds: int = Field(
        1800,
        ge=1,
        description="How long a suite may take to start apart from its own timeout: "
        "the image pull (docker), the wait for a node and the pull (kubernetes).",
    )
    volumes: dict[HostPath, ImagePath] = Field(
        {},
        description="Host folders mounted read-only into every test container or pod: host path -> path in "
        "the container (a model cache, files a test reads). The host is the runner's: docker: the engine's "
        "host (it may be remote), kubernetes: the node's (a hostPath volume; the folder must exist).",
    )

    @model_validator(mode="after")
    def _network_mode_needs_a_network(self) -> Runner:
        if not self.network and self.network_mode not in (None, "none"):
            raise ValueError(f"network_mode {self.network_mode!r} needs network: true (test code has none by default)")
        return self

    @model_validator(mode="after")
    def _one_folder_per_mount_point(self) -> Runner:
        # Two folders at one place: the engine refuses the container, the kubelet the pod.
        seen: dict[str, str] = {}
        for host, target in self.volumes.items():
            if target in seen:
                raise ValueError(f"volumes: {seen[target]} and {host} both mount at {target}")
            seen[target] = host
        return self


class PoolSettings(_Model):
    """An Airflow pool: a key under `pools`, created by `python -m include.nightly_ci pools`."""

    slots: int = Field(ge=1, description="Tasks at once; a GPU pool counts GPUs (a 2-GPU suite takes 2).")
    description: str = Field("", description="Shown in Admin > Pools.")
    runner: Runner | None = Field(None, description="Required on a pool that runs tests.")
    queue: QueueName | None = Field(
        None, description="The Celery queue of the workers that serve this pool; null: the pool's name."
    )


class RegistrySettings(_Model):
    """A registry the images go to: a key under `registries`."""

    kind: Literal["ecr", "acr", "docker"] = Field(
        description="`ecr` (EcrHook), `acr` (AzureContainerRegistryHook) or `docker` (login and password)."
    )
    conn_id: ConnId = Field(description="The Airflow connection with the registry's credentials.")
    repository: Repository = Field(description="The image repository, e.g. ai-dynamo/dynamo.")
    images: list[Literal["framework", "runtime"]] = Field(
        min_length=1, description="Which images it receives: framework, runtime."
    )
    host_override: str | None = Field(
        None, description="Talk to this host instead of the one the connection or ECR reports (a proxy)."
    )
    registry_id: str | None = Field(None, description="ecr only: the registry's account id.")


class Tags(_Model):
    """Image tag patterns, with {framework}, {arch} and {run_id}."""

    framework: str = Field("main-{framework}-framework-{arch}", description="The framework (cache) image's tag.")
    nightly: str = Field("nightly-{framework}-{arch}", description="The runtime image's moving tag.")
    run: str = Field("nightly-{framework}-{arch}-run-{run_id}", description="The runtime image's tag of one run.")


class Suite(_Model):
    """One test suite: a key under `tests.suites`."""

    marker: str = Field(description="A pytest -m expression; {framework} is the cell's framework.")
    timeout_minutes: int = Field(ge=1, description="The suite's time limit; the container or pod is killed after.")
    gpus: int = Field(1, ge=0, le=8, description="GPUs the suite asks for, and slots it takes in a GPU pool.")


DEFAULT_SUITES = {
    "unit": Suite(marker="unit and (nightly or post_merge or pre_merge)", timeout_minutes=45),
    "integration": Suite(marker="integration and (nightly or post_merge or pre_merge)", timeout_minutes=90),
    "e2e_1gpu": Suite(marker="{framework} and e2e and gpu_1", timeout_minutes=120),
    "e2e_2gpu": Suite(marker="(nightly or post_merge or pre_merge) and e2e and gpu_2", timeout_minutes=150, gpus=2),
}


class TestSettings(_Model):
    """The test suites every cell runs inside the runtime image the run pushed."""

    __test__ = False  # not a pytest class

    registry: Name | None = Field(
        None, description="The registry the tests pull the image from (by digest); null: the cache registry."
    )
    workdir: ImagePath = Field("/workspace", description="The working directory of the tests in the image.")
    results_dir: ImagePath = Field("/workspace/test-results", description="Where pytest writes its JUnit XML.")
    suites: dict[Name, Suite] = Field(DEFAULT_SUITES, description="The suites, by name.")


class RetentionSettings(_Model):
    """The retention DAG: what is old, and when it goes."""

    schedule: str = Field("0 12 * * *", description="Cron expression of the retention DAG, UTC.")
    artifacts_days: int = Field(7, ge=1, description="Artifacts older than this go.")
    run_tags_days: int = Field(7, ge=1, description="Run tags older than this go; moving tags never do.")


class NotificationSettings(_Model):
    """Slack and the overrun alert."""

    slack: SlackSettings = Field(default_factory=SlackSettings, description="Where and when the results are posted.")
    deadline_hours: float | None = Field(
        5, gt=0, description="A run still going after this many hours posts an alert; null: none."
    )


class ArtifactSettings(_Model):
    """Where logs, metrics, test output, JUnit, records and results are kept."""

    base: str = Field(
        "s3://nightly-ci-artifacts/nightly",
        description="An ObjectStoragePath: s3://bucket/prefix, abfs://container/prefix; a file:// "
        "URL or a plain path (relative to the config file) only with single_host.",
    )
    conn_id: ConnId | None = Field(
        "aws_default", description="The connection of the object store (aws, wasb); required for one."
    )
    single_host: bool = Field(
        False,
        description="The whole Airflow runs on one host, so a local folder is one store for every "
        "worker (the local setup). Otherwise each worker would write its own folder and the "
        "report would miss their records.",
    )


class NightlyConfig(_Model):
    """The nightly CI matrix: the one file users edit."""

    dag: DagSettings = Field(default_factory=DagSettings, description="The nightly DAG itself.")
    source: Source = Field(description="The repository the nightly builds.")
    frameworks: dict[Name, FrameworkSettings] = Field(min_length=1, description="One key per framework.")
    arches: dict[Name, ArchSettings] = Field(min_length=1, description="One key per architecture.")
    overrides: dict[str, dict[str, BuildArgs]] = Field(
        {}, description="Build args of one cell: overrides.ARCH.FRAMEWORK (the seed's arm64 overrides)."
    )
    pools: dict[PoolName, PoolSettings] = Field(min_length=1, description="Airflow pools, by name.")
    registries: dict[Name, RegistrySettings] = Field(min_length=1, description="Where images go, by name.")
    tags: Tags = Field(default_factory=Tags, description="Image tag patterns.")
    build: BuildSettings = Field(default_factory=BuildSettings, description="How images are built and pushed.")
    tests: TestSettings = Field(default_factory=TestSettings, description="The test suites.")
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings, description="The artifact store.")
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="What is old, and when it goes."
    )
    notifications: NotificationSettings = Field(
        default_factory=NotificationSettings, description="Slack and the overrun alert."
    )
    history: HistorySettings = Field(
        default_factory=HistorySettings, description="Test history, flakes and the quarantine."
    )
    culprit: CulpritSettings = Field(
        default_factory=CulpritSettings, description="Finding the commit that broke a test."
    )
