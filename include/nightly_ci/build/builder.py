"""Building a target of the project's Dockerfile with BuildKit, through the docker CLI.

Why a thin subprocess layer rather than a client library: docker-py's build is the
classic builder, which refuses `RUN --mount` (every heavy step of the real container
files), and python-on-whales builds through buildx, which Debian 12's docker.io does not
ship. The CLI does both: `docker buildx build --load` where the buildx plugin is
installed, otherwise the engine's built-in BuildKit (`DOCKER_BUILDKIT=1 docker build`).
Its `--progress=plain` output streams into the task log line by line as it comes, and the
same lines give the metrics: steps, cache hits, per-stage durations.

The build context is sent to the engine by the CLI (no file system is shared with it);
secrets are files in the task's private temporary folder, mounted only into the steps
that ask for them (`RUN --mount=type=secret`), never part of a layer or the log.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from include.nightly_ci.errors import BuildError, BuildUnavailable, EngineUnavailable, NightlyCiError

LineSink = Callable[[str], None]

# "#12 [framework 3/9] RUN ...", "#7 [linux/arm64 runtime 2/5] COPY ...", "#5 [2/3] RUN ..."
_VERTEX = re.compile(r"^#(?P<id>\d+) (?P<text>.*)$")
_STEP = re.compile(
    r"^\[(?:[\w.-]+/[\w./-]+ )?(?:(?P<stage>[^\s\]]+) )?(?P<index>\d+)/(?P<total>\d+)\] (?P<instruction>[A-Z]+)\b"
)
_DONE = re.compile(r"^DONE (?P<seconds>[0-9.]+)s$")
# The engine or the daemon, not the Dockerfile: worth retrying, and an infra failure. An
# engine that restarts mid-build drops the CLI's gRPC stream ("code = Unavailable").
_UNREACHABLE = (
    "cannot connect to the docker daemon",
    "error during connect",
    "is the docker daemon running",
    "code = unavailable",
    "error reading from server: eof",
    "transport is closing",
    # Debian's CLI 20.10 when the engine shuts down mid-build: the stream ends with no error
    # and no image (tests/faults/test_engine_worker.py); a failed step reports its own error.
    "server did not provide an image id",
)
# What the network or a registry did to a base image or a cache, not the Dockerfile: the
# texts BuildKit and Go's net/http give (TLS handshake timeout, the NGC / Docker Hub
# "request canceled while waiting for connection", resets, a connection closed with no
# answer (`failed to do request: HEAD "URL": EOF`), DNS, 5xx and 429 statuses).
_TRANSIENT = re.compile(
    r"tls handshake timeout|request canceled|connection reset|connection refused|i/o timeout|"
    r'failed to do request: \w+ "[^"]*": eof\b|'
    r"server misbehaving|temporary failure in name resolution|no such host|unexpected eof|"
    r"toomanyrequests|\b429 too many requests|\b5\d\d (internal server error|bad gateway|service unavailable|"
    r"gateway timeout)|status(?: code)?:? 5\d\d\b"
)

# The engine's image store missing a layer of an image being exported (Docker 19.03-20.10's
# built-in BuildKit, moby/moby#41595): met once by a build among others, and on every build
# of an engine whose storage was damaged (its overlay2 snapshots missing too).
_LOST_LAYER = re.compile(r"failed to get layer sha256:[0-9a-f]+: layer does not exist")


@dataclass(frozen=True)
class BuildSpec:
    """What to build: one target of one Dockerfile, for one platform."""

    context_dir: str
    dockerfile: str  # relative to the context
    target: str
    platform: str
    tag: str  # the local tag of the result on the builder
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    cache_from: tuple[str, ...] = ()
    cache_to: str | None = None  # a registry ref for `type=registry,mode=max` (buildx only)
    secrets: Mapping[str, str] = field(default_factory=dict)  # secret id -> file
    network_mode: str | None = None


@dataclass(frozen=True)
class Step:
    """One Dockerfile instruction as BuildKit ran it (or took from the cache)."""

    vertex: int
    stage: str
    index: int
    total: int
    instruction: str
    cached: bool = False
    seconds: float = 0.0
    failed: bool = False


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    steps: tuple[Step, ...]

    @property
    def steps_total(self) -> int:
        return len(self.steps)

    @property
    def steps_cached(self) -> int:
        return sum(s.cached for s in self.steps)

    @property
    def cache_hit_rate(self) -> float:
        return round(self.steps_cached / self.steps_total, 4) if self.steps else 0.0

    def stage_seconds(self) -> dict[str, float]:
        """Seconds each stage's steps ran (cached steps take none)."""
        out: dict[str, float] = {}
        for s in self.steps:
            out[s.stage] = round(out.get(s.stage, 0.0) + s.seconds, 2)
        return out


class Progress:
    """Follows BuildKit's plain progress output: which steps ran, which were cached, how
    long each took, and what the failing step printed."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.steps: dict[int, Step] = {}
        self.output: dict[int, list[str]] = {}
        self.lines: list[str] = []

    def feed(self, line: str) -> None:
        self.lines.append(line)
        found = _VERTEX.match(line)
        if not found:
            return
        vertex, text = int(found["id"]), found["text"]
        if vertex not in self.names:
            self.names[vertex] = text
            step = _STEP.match(text)
            if step and step["instruction"] != "FROM":
                self.steps[vertex] = Step(
                    vertex, step["stage"] or "stage", int(step["index"]), int(step["total"]), step["instruction"]
                )
            return
        current = self.steps.get(vertex)
        done = _DONE.match(text)
        if text == "CACHED" and current:
            self.steps[vertex] = replace(current, cached=True)
        elif done and current:
            self.steps[vertex] = replace(current, seconds=float(done["seconds"]))
        elif text.startswith("ERROR:") and current:
            self.steps[vertex] = replace(current, failed=True)
        elif text != self.names[vertex]:
            self.output.setdefault(vertex, []).append(text)

    def result(self, image_id: str) -> BuildResult:
        return BuildResult(image_id, tuple(sorted(self.steps.values(), key=lambda s: (s.stage, s.index))))

    def failure(self, exit_code: int) -> str:
        """What failed, in a few lines: the failing step, its last output, the verdict."""
        failed = [s for s in self.steps.values() if s.failed]
        where = f"{self.names[failed[0].vertex]}" if failed else "the build"
        said = self.output.get(failed[0].vertex, [])[-15:] if failed else []
        verdict = next((line for line in reversed(self.lines) if line.strip()), f"exit code {exit_code}")
        return "\n".join([f"build failed at {where}: {verdict}", *said, "--- last output ---", *self.lines[-30:]])


class BuildKit:
    """The docker CLI at CLI, with ENV (the engine, its TLS, the registry logins)."""

    def __init__(self, cli: str, env: Mapping[str, str]):
        self.cli = cli
        self.env = {**os.environ, **env}

    @cached_property
    def buildx(self) -> bool:
        """Whether the CLI has the buildx plugin (then caches can go to the registry too)."""
        try:
            proc = subprocess.run([self.cli, "buildx", "version"], env=self.env, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return proc.returncode == 0

    def command(self, spec: BuildSpec, iidfile: str) -> list[str]:
        cmd = [self.cli, "buildx", "build", "--load"] if self.buildx else [self.cli, "build"]
        cmd += ["--progress=plain", "--file", os.path.join(spec.context_dir, spec.dockerfile)]
        cmd += ["--target", spec.target, "--platform", spec.platform, "--tag", spec.tag, "--iidfile", iidfile]
        # Cache metadata inside the image itself, so that pushing the image pushes its cache.
        args = {**spec.build_args, "BUILDKIT_INLINE_CACHE": "1"}
        cmd += [part for name, value in sorted(args.items()) for part in ("--build-arg", f"{name}={value}")]
        cmd += [part for name, value in sorted(spec.labels.items()) for part in ("--label", f"{name}={value}")]
        for ref in spec.cache_from:
            cmd += ["--cache-from", f"type=registry,ref={ref}" if self.buildx else ref]
        if spec.cache_to and self.buildx:
            cmd += ["--cache-to", f"type=registry,ref={spec.cache_to},mode=max"]
        cmd += [part for sid, path in sorted(spec.secrets.items()) for part in ("--secret", f"id={sid},src={path}")]
        if spec.network_mode:
            cmd += ["--network", spec.network_mode]
        return [*cmd, spec.context_dir]

    def build(self, spec: BuildSpec, iidfile: str, sink: LineSink) -> BuildResult:
        """Build SPEC; every output line goes to SINK as it comes. Raises BuildError with
        the failing step's output, or EngineUnavailable when the engine can't be reached."""
        env = {**self.env, "DOCKER_BUILDKIT": "1"}
        progress = Progress()
        with subprocess.Popen(
            self.command(spec, iidfile),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        ) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                progress.feed(line)
                sink(line)
        if proc.returncode != 0:
            text = "\n".join(progress.lines[-30:]).lower()
            if "buildx component is missing" in text or "unknown flag: --secret" in text:
                raise BuildError(
                    f"the docker CLI {self.cli!r} has neither buildx nor a built-in BuildKit; set build.docker_cli "
                    "to one that has (Debian's docker.io 20.10 has it)"
                )
            raise build_failure(progress, proc.returncode)
        with open(iidfile) as f:
            return progress.result(f.read().strip())


def build_failure(progress: Progress, exit_code: int) -> NightlyCiError:
    """The error of a failed build, by cause: the engine gone (EngineUnavailable), a full
    disk or what the network did to a base image (BuildUnavailable: both retried, infra),
    else the Dockerfile's (BuildError: fails at once). A RUN step that failed is the
    Dockerfile's even when its own output mentions the network: its command chose to."""
    text = "\n".join(progress.lines[-30:]).lower()
    last = progress.lines[-1] if progress.lines else ""
    if any(word in text for word in _UNREACHABLE):
        return EngineUnavailable(f"the builder engine is unreachable or restarted mid-build: {last}")
    if "no space left on device" in text:
        return BuildUnavailable(f"the builder ran out of disk space: {progress.failure(exit_code)}")
    if _LOST_LAYER.search(text):
        return BuildUnavailable(
            "the builder engine's image store lost a layer while the image was exported (a known fault of "
            "Docker 19.03-20.10's built-in BuildKit, moby/moby#41595; if every try meets it, the engine's "
            f"storage is damaged and the engine must be made again): {last}"
        )
    failed_step = any(s.failed for s in progress.steps.values())
    if not failed_step and _TRANSIENT.search(text):
        return BuildUnavailable(f"a registry or the network failed the build: {progress.failure(exit_code)}")
    return BuildError(progress.failure(exit_code))
