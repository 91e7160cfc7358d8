"""The typed, validated model of the nightly matrix YAML.

Every problem is collected (not only the first) and reported with the YAML path of the
fault and, where known, its line, so that one bad edit produces one clear import error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from include.nightly_ci.names import (
    BUILD_ARG_NAME_RE,
    BUILD_ARG_VALUE_RE,
    CONN_ID_RE,
    GIT_REF_RE,
    NAME_RE,
    PLATFORM_RE,
    POOL_RE,
    REL_PATH_RE,
    REPOSITORY_RE,
    TAG_PLACEHOLDERS,
    tag_pattern_problem,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "include" / "config" / "nightly_ci.yaml"
CONFIG_ENV = "NIGHTLY_CI_CONFIG"


@dataclass(frozen=True)
class Finding:
    path: str
    message: str
    line: str | None = None  # "line 12", or "base.yaml line 12" when it comes from an extended file

    def __str__(self) -> str:
        where = f"{self.path or '<root>'}" + (f" ({self.line})" if self.line else "")
        return f"{where}: {self.message}"


class ConfigError(ValueError):
    """Every finding of one config file; the message lists them all."""

    def __init__(self, file: Path | str, findings: list[Finding]):
        self.file = str(file)
        self.findings = findings
        lines = "\n".join(f"  - {f}" for f in findings)
        super().__init__(f"invalid nightly-ci config {self.file}: {len(findings)} problem(s)\n{lines}")


def _pattern(regex: re.Pattern[str], what: str):
    def check(value: Any) -> Any:
        if isinstance(value, str) and not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what} (must match {regex.pattern})")
        return value

    return BeforeValidator(check)


def _scalar_to_str(value: Any) -> Any:
    # YAML reads CUDA_VERSION: 129 as an int; a build arg is a string either way.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return value


Name = Annotated[str, _pattern(NAME_RE, "name (lower-case letters, digits, '_'; used in task ids, tags and shells)")]
PoolName = Annotated[str, _pattern(POOL_RE, "pool name")]
ConnId = Annotated[str, _pattern(CONN_ID_RE, "connection id")]
GitRef = Annotated[str, _pattern(GIT_REF_RE, "git branch name")]
RelPath = Annotated[str, _pattern(REL_PATH_RE, "relative path inside the repository")]
Platform = Annotated[str, _pattern(PLATFORM_RE, "platform (os/arch[/variant])")]
Repository = Annotated[str, _pattern(REPOSITORY_RE, "image repository name")]
BuildArgName = Annotated[str, _pattern(BUILD_ARG_NAME_RE, "build arg name")]
BuildArgValue = Annotated[
    str,
    BeforeValidator(_scalar_to_str),
    _pattern(BUILD_ARG_VALUE_RE, "build arg value (no spaces or shell characters)"),
]
BuildArgs = dict[BuildArgName, BuildArgValue]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DagSettings(_Model):
    dag_id: Name = "nightly_ci"
    schedule: str = "0 8 * * *"
    start_date: date = date(2026, 1, 1)
    catchup: bool = False
    max_active_runs: int = Field(default=1, ge=1)
    owner: str = "ci-infra"
    tags: list[str] = ["nightly", "ci"]


class Source(_Model):
    repository: str = Field(min_length=1)
    branch: GitRef = "main"
    dockerfile: RelPath = "container/Dockerfile"
    context: RelPath = "."


class FrameworkSettings(_Model):
    build_args: BuildArgs = {}


class Builder(_Model):
    # None: the local engine (DOCKER_HOST or the default socket).
    conn_id: ConnId | None = None


class ArchSettings(_Model):
    platform: Platform
    build_pool: PoolName
    test_pool: PoolName
    # run: the suites run; collect: `pytest --collect-only` (arm64 has no GPU runners)
    test_mode: Literal["run", "collect"] = "run"
    builder: Builder = Builder()
    build_args: BuildArgs = {}


class Toleration(_Model):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Runner(_Model):
    """Where a pool's test tasks run: a Docker engine or a Kubernetes cluster."""

    backend: Literal["docker", "kubernetes"] = "docker"
    # docker: an engine connection (host tcp://... or unix://..., TLS files in extras);
    # kubernetes: a kubernetes connection. None: the local engine / in-cluster config.
    conn_id: ConnId | None = None
    gpus: bool = True  # request the suite's GPUs (device_requests / nvidia.com/gpu)
    cpus: float | None = Field(default=None, gt=0)
    memory: str | None = None
    network_mode: str | None = None  # docker only
    namespace: str = "default"  # kubernetes only, below too
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    image_pull_secrets: list[str] = []
    startup_timeout_seconds: int = Field(default=1800, ge=1)


class PoolSettings(_Model):
    slots: int = Field(ge=1)
    description: str = ""
    runner: Runner | None = None
    # The Celery queue of the workers that serve this pool (default: the pool's name), so
    # that builders and GPU hosts each take their own work.
    queue: Annotated[str, _pattern(POOL_RE, "queue name")] | None = None


class RegistrySettings(_Model):
    kind: Literal["ecr", "acr", "docker"]
    conn_id: ConnId
    repository: Repository
    images: list[Literal["framework", "runtime"]] = Field(min_length=1)
    # Talk to this host instead of the one the connection or ECR reports
    # (a pull-through proxy, or a stand-in registry in tests).
    host_override: str | None = None
    registry_id: str | None = None


class Tags(_Model):
    framework: str = "main-{framework}-framework-{arch}"
    nightly: str = "nightly-{framework}-{arch}"
    run: str = "nightly-{framework}-{arch}-run-{run_id}"


class BuildSettings(_Model):
    framework_target: Name = "framework"
    runtime_target: Name = "runtime"
    timeout_minutes: int = Field(default=120, ge=1)
    retries: int = Field(default=1, ge=0)
    push_attempts: int = Field(default=6, ge=1)
    push_backoff_seconds: float = Field(default=10, gt=0)
    push_backoff_max_seconds: float = Field(default=120, gt=0)
    network_mode: str | None = None


class Suite(_Model):
    marker: str  # a pytest -m expression; {framework} is the cell's framework
    timeout_minutes: int = Field(ge=1)
    gpus: int = Field(default=1, ge=0, le=8)


DEFAULT_SUITES = {
    "unit": Suite(marker="unit and (nightly or post_merge or pre_merge)", timeout_minutes=45),
    "integration": Suite(marker="integration and (nightly or post_merge or pre_merge)", timeout_minutes=90),
    "e2e_1gpu": Suite(marker="{framework} and e2e and gpu_1", timeout_minutes=120),
    "e2e_2gpu": Suite(marker="(nightly or post_merge or pre_merge) and e2e and gpu_2", timeout_minutes=150, gpus=2),
}


class TestSettings(_Model):
    __test__ = False  # not a pytest class

    registry: Name | None = None  # where tests pull the image from; default: the cache registry
    workdir: str = "/workspace"
    results_dir: str = "/workspace/test-results"
    suites: dict[Name, Suite] = DEFAULT_SUITES


class RetentionSettings(_Model):
    schedule: str = "0 12 * * *"
    artifacts_days: int = Field(default=7, ge=1)
    run_tags_days: int = Field(default=7, ge=1)


class SlackSettings(_Model):
    # A `slackwebhook` connection (the webhook URL as its password), or with `channel`
    # a `slack` connection to the Slack API. None: no Slack.
    conn_id: ConnId | None = None
    channel: str | None = None
    ops_group_id: str | None = None  # the Slack user group mentioned on failure
    when: Literal["always", "failure", "change"] = "failure"
    retries: int = Field(default=5, ge=0)  # on 429 (after Retry-After) and 5xx


class NotificationSettings(_Model):
    slack: SlackSettings = SlackSettings()
    # A run still going after this many hours posts to Slack (a Deadline Alert); null: none.
    deadline_hours: float | None = Field(default=5, gt=0)


class ArtifactSettings(_Model):
    # An ObjectStoragePath base: file:///..., s3://bucket/prefix, abfs://...; a plain
    # relative path is taken from the config file's folder.
    base: str = "../../.local/artifacts"
    conn_id: ConnId | None = None


class NightlyConfig(_Model):
    dag: DagSettings = DagSettings()
    source: Source
    frameworks: dict[Name, FrameworkSettings] = Field(min_length=1)
    arches: dict[Name, ArchSettings] = Field(min_length=1)
    overrides: dict[str, dict[str, BuildArgs]] = {}
    pools: dict[PoolName, PoolSettings] = Field(min_length=1)
    registries: dict[Name, RegistrySettings] = Field(min_length=1)
    tags: Tags = Tags()
    build: BuildSettings = BuildSettings()
    tests: TestSettings = TestSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    retention: RetentionSettings = RetentionSettings()
    notifications: NotificationSettings = NotificationSettings()


# ---------------------------------------------------------------- semantic checks


def _semantic_findings(cfg: NightlyConfig) -> list[Finding]:
    found: list[Finding] = []
    for arch, fws in cfg.overrides.items():
        if arch not in cfg.arches:
            found.append(
                Finding(f"overrides.{arch}", f"override for unknown arch {arch!r} (arches: {', '.join(cfg.arches)})")
            )
        for fw in fws:
            if fw not in cfg.frameworks:
                found.append(
                    Finding(
                        f"overrides.{arch}.{fw}",
                        f"override for unknown framework {fw!r} (frameworks: {', '.join(cfg.frameworks)})",
                    )
                )
    for arch, settings in cfg.arches.items():
        for field in ("build_pool", "test_pool"):
            pool = getattr(settings, field)
            if pool not in cfg.pools:
                found.append(
                    Finding(
                        f"arches.{arch}.{field}",
                        f"pool {pool!r} is not defined under pools (defined: {', '.join(cfg.pools)})",
                    )
                )
    for field, pattern in cfg.tags.model_dump().items():
        problem = tag_pattern_problem(pattern, require_run_id=(field == "run"))
        if problem:
            found.append(Finding(f"tags.{field}", problem))
    patterns = list(cfg.tags.model_dump().values())
    if len(set(patterns)) != len(patterns):
        found.append(Finding("tags", "the framework, nightly and run tag patterns must differ"))
    for image in ("framework", "runtime"):
        if not any(image in r.images for r in cfg.registries.values()):
            found.append(Finding("registries", f"no registry receives {image} images"))
    for name, reg in cfg.registries.items():
        if len(set(reg.images)) != len(reg.images):
            found.append(Finding(f"registries.{name}.images", "lists an image kind twice"))
    found += _test_findings(cfg)
    if cfg.build.framework_target == cfg.build.runtime_target:
        found.append(Finding("build.runtime_target", "must differ from build.framework_target"))
    if cfg.build.push_backoff_max_seconds < cfg.build.push_backoff_seconds:
        found.append(Finding("build.push_backoff_max_seconds", "must be at least build.push_backoff_seconds"))
    from croniter import croniter

    for path, cron in (("dag.schedule", cfg.dag.schedule), ("retention.schedule", cfg.retention.schedule)):
        if not croniter.is_valid(cron):
            found.append(Finding(path, f"{cron!r} is not a valid cron expression"))
    return found


# A Kubernetes resource quantity (64Gi, 512Mi, 1.5G).
_K8S_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?([EPTGMK]i|[EPTGMk]|m)?")


def _memory_ok(backend: str, size: str) -> bool:
    if backend == "kubernetes":
        return bool(_K8S_QUANTITY.fullmatch(size))
    from docker.errors import DockerException
    from docker.utils import parse_bytes  # what the docker backend hands the engine

    try:
        parse_bytes(size)
    except DockerException:
        return False
    return True


def _test_findings(cfg: NightlyConfig) -> list[Finding]:
    found: list[Finding] = []
    for arch, settings in cfg.arches.items():
        pool = cfg.pools.get(settings.test_pool)
        if pool is not None and pool.runner is None:
            found.append(
                Finding(f"pools.{settings.test_pool}.runner", f"is required: arch {arch!r} runs its tests in this pool")
            )
    for name, pool in cfg.pools.items():
        runner = pool.runner
        if runner is not None and runner.memory is not None and not _memory_ok(runner.backend, runner.memory):
            found.append(
                Finding(
                    f"pools.{name}.runner.memory",
                    f"{runner.memory!r} is not a {runner.backend} memory size "
                    + ("(like 64g or 512m)" if runner.backend == "docker" else "(like 64Gi or 512Mi)"),
                )
            )
    reg = cfg.tests.registry
    if reg is not None and (reg not in cfg.registries or "runtime" not in cfg.registries[reg].images):
        found.append(Finding("tests.registry", f"{reg!r} is not a registry that receives runtime images"))
    if not cfg.tests.suites:
        found.append(Finding("tests.suites", "needs at least one suite"))
    for name, suite in cfg.tests.suites.items():
        problem = marker_problem(suite.marker, next(iter(cfg.frameworks), "framework"))
        if problem:
            found.append(Finding(f"tests.suites.{name}.marker", problem))
    return found


def marker_problem(marker: str, framework: str) -> str | None:
    """Why MARKER (with {framework} filled in) is not a pytest marker expression, or None."""
    from include.nightly_ci.markers import MarkerError, check_marker_expression

    try:
        expr = marker.format(framework=framework)
    except (KeyError, IndexError, ValueError) as exc:
        return f"{marker!r}: only the placeholder {{framework}} is known ({exc})"
    try:
        check_marker_expression(expr)
    except MarkerError as exc:
        return f"{marker!r} is not a pytest marker expression: {exc}"
    return None


# ---------------------------------------------------------------- loading


class _LineMap:
    """YAML path -> line number, and duplicate keys, from the composed node tree."""

    def __init__(self, text: str, label: str = ""):
        self.label = label
        self.lines: dict[tuple[str, ...], int] = {}
        self.duplicates: list[Finding] = []
        node = yaml.compose(text, Loader=_Loader)
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[str, ...]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                k = str(key.value)
                if k in seen:
                    self.duplicates.append(
                        Finding(".".join((*path, k)), "duplicate key", f"line {key.start_mark.line + 1}")
                    )
                seen.add(k)
                self.lines[(*path, k)] = key.start_mark.line + 1
                self._walk(value, (*path, k))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, str(i)))

    def line_of(self, path: tuple[str, ...]) -> str | None:
        while path:
            if path in self.lines:
                return f"{self.label}line {self.lines[path]}"
            path = path[:-1]
        return None


def _line_in(maps: list[_LineMap], path: str | tuple[str, ...]) -> str | None:
    parts = tuple(path.split(".")) if isinstance(path, str) else path
    return next((m.line_of(parts) for m in maps if m.line_of(parts)), None)


class Replace(dict):
    """A mapping tagged `!replace` in an extending file: it replaces, not merges."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!replace", lambda loader, node: Replace(loader.construct_mapping(node, deep=True)))


def _read_yaml(file: Path, label: str = "") -> tuple[dict[str, Any], _LineMap]:
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(file, [Finding("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        lines = _LineMap(text, label)
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader with one extra tag
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            file, [Finding("", f"not valid YAML: {exc}", f"{label}line {mark.line + 1}" if mark else None)]
        ) from None
    if lines.duplicates:
        raise ConfigError(file, lines.duplicates)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, [Finding("", "the top level must be a mapping")])
    return data, lines


# Values that may be paths: a relative one is taken from the folder of the file that says it.
_PATH_KEYS = (("source", "repository"), ("artifacts", "base"))


def _anchor_paths(data: dict[str, Any], folder: Path) -> None:
    for section, key in _PATH_KEYS:
        value = (data.get(section) or {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value:
            data[section][key] = resolve_local(value, str(folder))


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """TOP over BASE. A `!replace` mapping stays marked through a chain of extends, also
    when a file further down refines it, so that no ancestor's keys leak back into it."""
    merged = dict(base)
    for key, value in top.items():
        old = merged.get(key)
        if isinstance(value, dict) and not isinstance(value, Replace) and isinstance(old, dict):
            merged[key] = _merge(old, value)
            if isinstance(old, Replace):
                merged[key] = Replace(merged[key])
        else:
            merged[key] = value
    return merged


def _unmark(data: Any) -> Any:
    """Plain dicts again once every file is merged."""
    if isinstance(data, dict):
        return {k: _unmark(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_unmark(v) for v in data]
    return data


def _loc_to_path(loc: tuple[Any, ...]) -> tuple[str, ...]:
    # pydantic puts "[key]" after a dict key that failed its own validation
    return tuple(str(p) for p in loc if p != "[key]")


def _pydantic_findings(exc: ValidationError, line_maps: list[_LineMap]) -> list[Finding]:
    found = []
    for err in exc.errors():
        path = _loc_to_path(err["loc"])
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"].endswith("_type") or err["type"] in {"dict_type", "list_type"}:
            message = f"wrong type: {err['msg'].lower()}, got {type(err['input']).__name__} {err['input']!r}"
        else:
            message = err["msg"].removeprefix("Value error, ")
        if "[key]" in [str(p) for p in err["loc"]]:
            message = f"invalid key: {message}"
        found.append(Finding(".".join(path), message, _line_in(line_maps, path)))
    return found


def load_config(file: Path | str | None = None) -> NightlyConfig:
    """Load and validate FILE (default: $NIGHTLY_CI_CONFIG, else the shipped config).

    A file may start with `extends: OTHER.yaml` (relative to itself): OTHER is loaded
    first and this file's mappings are merged over it; a mapping tagged `!replace`
    replaces the one it overrides instead.
    """
    path = Path(file or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).resolve()
    data, lines = _read_yaml(path)
    _anchor_paths(data, path.parent)
    line_maps = [lines]
    chain = [path]
    while "extends" in data:
        parent_name = data.pop("extends")
        if not isinstance(parent_name, str):
            raise ConfigError(path, [Finding("extends", "must be a file name", _line_in(line_maps, "extends"))])
        parent = (chain[-1].parent / parent_name).resolve()
        if parent in chain:
            raise ConfigError(path, [Finding("extends", f"{parent} extends itself")])
        parent_data, parent_lines = _read_yaml(parent, f"{parent.name} ")
        _anchor_paths(parent_data, parent.parent)
        data = _merge(parent_data, data)
        line_maps.append(parent_lines)
        chain.append(parent)
    try:
        cfg = NightlyConfig.model_validate(_unmark(data))
    except ValidationError as exc:
        raise ConfigError(path, _pydantic_findings(exc, line_maps)) from None
    findings = _semantic_findings(cfg)
    if findings:
        raise ConfigError(path, [Finding(f.path, f.message, _line_in(line_maps, f.path)) for f in findings])
    return cfg


def resolve_local(value: str, base_dir: str) -> str:
    """A plain path relative to the config's folder; URLs are returned as they are."""
    if "://" in value or value.startswith("git@"):
        return value
    return str((Path(base_dir) / value).resolve())


__all__ = ["TAG_PLACEHOLDERS", "ConfigError", "Finding", "NightlyConfig", "load_config", "resolve_local"]
