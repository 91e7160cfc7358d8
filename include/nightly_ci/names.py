"""The one place names are made and checked: name rules, image kinds, stages, labels,
tag patterns and tag-safe run ids.

Pure Python (no Airflow): the config validator, the plan and the Params share these.
Task ids are not made here: plan.py makes every one of them.
"""

from __future__ import annotations

import hashlib
import re
import string
from datetime import datetime, timedelta
from enum import IntEnum

# Framework, arch and registry names end up in task ids, image tags and shell words.
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,23}")
POOL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# A folder inside an image: absolute, plain characters (it is pasted into the pod's script
# and the container's command), no '.' or '..' segment.
ABS_PATH_RE = re.compile(r"(?:/(?!\.{1,2}(?:/|$))[A-Za-z0-9_.-]+){1,32}")
CONN_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}")
PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?")
REPOSITORY_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
REL_PATH_RE = re.compile(r"(?!/)(?!(?:.*/)?\.\.(?:/|$))[A-Za-z0-9._/-]+")
BUILD_ARG_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
BUILD_ARG_VALUE_RE = re.compile(r"[A-Za-z0-9._:/+=@-]{0,256}")
# A branch, tag or commit: git's ref-name rules, minus anything a shell would expand.
GIT_REF_RE = re.compile(r"(?!.*\.\.)(?!.*//)(?!.*\.lock$)(?!.*[./]$)[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")
COMMIT_RE = re.compile(r"[0-9a-f]{7,40}")
SECRET_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A field of an Airflow connection a build secret comes from.
CONN_FIELD_RE = re.compile(r"login|password|host|schema|extra\.[A-Za-z0-9_.-]+")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# The two images of a cell, and the stages of a nightly (the table's kinds of job).
FRAMEWORK, RUNTIME = "framework", "runtime"
SOURCE, BUILD, PUSH, TEST, REPORT = "source", "build", "push", "test", "report"
RERUN = "rerun"  # the flake reruns of a cell's newly failing cases (not jobs of the table)
STAGES = (SOURCE, BUILD, PUSH, TEST, RERUN, REPORT)
RETENTION = "retention"  # the tasks of the retention DAG

# OCI and project labels every image carries.
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_CREATED = "org.opencontainers.image.created"
LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_LOGICAL_DATE = "dev.nightly-ci.logical-date"
LABEL_RUN_ID = "dev.nightly-ci.run-id"
# Labels of the containers a suite runs in.
LABEL_CELL = "dev.nightly-ci.cell"
LABEL_SUITE = "dev.nightly-ci.suite"
LABEL_DAG = "dev.nightly-ci.dag-id"  # the reaper touches only its own DAG's containers
# When the container must be gone (ISO 8601, UTC): it stops itself by then, and the reaper
# removes it after, even when the worker that started it died (H7).
LABEL_DEADLINE = "dev.nightly-ci.deadline"

# What a test reads to know which run of it this is: "0" in its suite's own run, N in the
# Nth rerun of a newly failing case (the sample project's flaky test uses it).
RERUN_ENV = "NIGHTLY_CI_RERUN"

# The kinds of run the history compares night over night: a scheduled or backfilled
# night is compared only with nights, a manual run only with manual runs.
NIGHTLY_RUN, MANUAL_RUN = "nightly", "manual"


def run_kind(run_id: str) -> str:
    """'nightly' for scheduled and backfill runs, else 'manual' (a trigger, a chosen id)."""
    return NIGHTLY_RUN if run_id.partition("__")[0] in ("scheduled", "backfill") else MANUAL_RUN


def regressions_asset(dag_id: str) -> str:
    """The name of the Asset whose events carry a night's regressions to the culprit finder."""
    return f"{dag_id}.regressions"


# What a run leaves at the top of its folder (BASE/RUN/): which run it is, its night and
# when it ran. Retention ages a run's files by it and deletes only in folders that have it.
RUN_MARKER = "nightly-ci-run.json"
# What the notify task leaves there when it posted through the Slack API: the channel and
# the `ts` of the night's message, so that the culprit finder's findings are threaded under it.
SLACK_THREAD = "slack.json"

TAG_PLACEHOLDERS = ("framework", "arch", "run_id")
_SAMPLE = {"framework": "f" * 24, "arch": "a" * 24, "run_id": "r" * 48}  # the longest each can be


def tag_pattern_problem(pattern: str, *, require_run_id: bool) -> str | None:
    """Why PATTERN can't make valid image tags, or None."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as exc:
        return f"{pattern!r} is not a valid pattern: {exc}"
    unknown = fields - set(TAG_PLACEHOLDERS)
    if unknown:
        known = ", ".join("{" + p + "}" for p in TAG_PLACEHOLDERS)
        return f"unknown placeholder(s) {sorted(unknown)} in {pattern!r} (known: {known})"
    if not {"framework", "arch"} <= fields:
        return f"{pattern!r} must contain {{framework}} and {{arch}}"
    if require_run_id and "run_id" not in fields:
        return f"{pattern!r} must contain {{run_id}}"
    if not require_run_id and "run_id" in fields:
        return f"{pattern!r} is a moving tag and must not contain {{run_id}}"
    longest = pattern.format(**_SAMPLE) + (BUILD_TAG_SUFFIX.format(image="framework") if require_run_id else "")
    if not TAG_RE.fullmatch(longest):
        room = " with the build's '-build-framework' after it" if require_run_id else ""
        return f"{pattern!r} does not make a valid image tag{room} (letters, digits, '_', '.', '-'; at most 128)"
    return None


PATH_PLACEHOLDERS = ("framework", "arch")


def path_pattern_problem(pattern: str) -> str | None:
    """Why PATTERN (a path with {framework} and {arch}) can't name a file of the repository, or None."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as exc:
        return f"{pattern!r} is not a valid pattern: {exc}"
    unknown = fields - set(PATH_PLACEHOLDERS)
    if unknown:
        return f"unknown placeholder(s) {sorted(unknown)} in {pattern!r} (known: {{framework}}, {{arch}})"
    if not REL_PATH_RE.fullmatch(pattern.format(framework="vllm", arch="amd64")):
        return f"{pattern!r} is not a relative path inside the repository"
    return None


def render_path(pattern: str, framework: str, arch: str) -> str:
    return pattern.format(framework=framework, arch=arch)


# The forms tag_safe_run_id derives: a compacted Airflow id, and a sanitised one with its hash.
_DERIVED_FORM = re.compile(r"[a-z-]+-\d{8}T\d{6}(?:\.\d{6})?Z|.*-[0-9a-f]{8}")


def tag_safe_run_id(run_id: str) -> str:
    """A form of an Airflow run id that fits in an image tag; the same for every retry.

    Airflow's own ids (`scheduled__2026-11-28T08:00:00+00:00`) become
    `scheduled-20261128T080000Z`; anything else is sanitised and, where that lost
    information or the result has a derived form, suffixed with a short hash so two run
    ids never share a tag.
    """
    kind, sep, stamp = run_id.partition("__")
    if sep and re.fullmatch(r"[a-z_]+", kind):
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            when = None
        # Only Airflow's canonical UTC form compacts; any other offset would collide.
        if when is not None and when.utcoffset() == timedelta(0) and when.isoformat() == stamp:
            compact = when.strftime("%Y%m%dT%H%M%S") + (f".{when.microsecond:06d}" if when.microsecond else "")
            return f"{kind.replace('_', '-')}-{compact}Z"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-.")
    # Kept as it is only if it can't be another id's form: a chosen "scheduled-2026...Z"
    # once wrote into that night's folder and pushed its tags (M4).
    if safe == run_id and 0 < len(safe) <= 48 and not _DERIVED_FORM.fullmatch(safe):
        return safe
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{safe[:39].rstrip('-.') or 'run'}-{digest}"


def render_tag(pattern: str, framework: str, arch: str, run_id: str | None = None) -> str:
    values = {"framework": framework, "arch": arch}
    if run_id is not None:
        values["run_id"] = tag_safe_run_id(run_id)
    return pattern.format(**values)


# A build pushes what it built to the cache registry as its run tag plus this suffix: the
# push tasks promote that digest, and retention removes it with the run's tags.
BUILD_TAG_SUFFIX = "-build-{image}"


def build_tag(run_pattern: str, framework: str, arch: str, run_id: str, image: str) -> str:
    """The run-scoped tag a build pushes IMAGE (framework or runtime) of the cell as."""
    return render_tag(run_pattern, framework, arch, run_id) + BUILD_TAG_SUFFIX.format(image=image)


def cache_tag(framework: str, arch: str) -> str:
    """The cell's registry cache (`type=registry,mode=max`, where the builder can export one)."""
    return f"{framework}-{arch}-cache"


class PytestExit(IntEnum):
    """pytest's exit codes (pytest.ExitCode; pytest is not installed where the tasks run):
    the suites, their reruns, the culprit finder's candidates and its judge read them."""

    OK = 0
    TESTS_FAILED = 1
    INTERRUPTED = 2  # collection errors too
    INTERNAL_ERROR = 3
    USAGE_ERROR = 4  # what it was given could not be selected: "not found"
    NO_TESTS_COLLECTED = 5
