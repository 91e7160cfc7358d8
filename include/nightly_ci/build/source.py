"""Which commit a run builds, and a checkout of it for the build context.

Plain git through subprocess into a private temporary folder: nothing is shared between
workers, and the resolved commit (not the ref) is what every later task uses.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime

from include.nightly_ci.errors import SourceError, SourceUnavailable
from include.nightly_ci.names import COMMIT_RE, GIT_REF_RE
from include.nightly_ci.records import JsonRecord

log = logging.getLogger(__name__)
# No prompts; over HTTP(S) a transfer slower than 1 kB/s for 60 s is given up.
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
    "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
    "GIT_HTTP_LOW_SPEED_TIME": "60",
}
# Every git command ends within this (a server that accepts and stalls, over git:// or
# SSH, once hung resolve_source for good and with it every later night: H6).
GIT_TIMEOUT_SECONDS = 600
# What a retry may mend: the network, the server's 5xx and 429, a stalled transfer.
_TRANSIENT = re.compile(
    r"could not resolve host|unable to connect|connection (refused|reset|timed out)|timed out|"
    r"returned error: (5\d\d|429)|early eof|rpc failed|remote end hung up|operation too slow|"
    r"temporary failure|ssh: connect to host",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Resolution:
    commit: str
    ref: str
    reason: str  # a sentence for the task log and the summary
    committed_at: str


@dataclass(frozen=True)
class SourceInfo(JsonRecord):
    """resolve_source's XCom: the one commit the whole run builds, and the run it is for."""

    repository: str
    commit: str
    ref: str
    reason: str
    committed_at: str
    run_id: str
    run_type: str
    night: str  # the run's logical date (or run_after), ISO, UTC
    publish: bool  # whether the run may move the moving tags
    resolved_at: str  # the run's build time: the images' created label, the same for every retry


def _git(*args: str, cwd: str | None = None, timeout: float | None = None) -> str:
    """git ARGS; SourceUnavailable (retried) for what the network or server may mend,
    SourceError (not retried) for anything else."""
    env = {**os.environ, **_GIT_ENV}
    limit = timeout or GIT_TIMEOUT_SECONDS
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"git {' '.join(args)} did not finish within {limit:g} s (a stalled server?)") from None
    if proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()
        error = SourceUnavailable if _TRANSIENT.search(detail) else SourceError
        raise error(f"git {' '.join(args)} failed: {detail}")
    return proc.stdout.strip()


def _fetch_history(repository: str, workdir: str, timeout: float | None = None) -> str:
    """A bare, blob-less copy of the repository's refs and history (no file contents)."""
    bare = os.path.join(workdir, "history.git")
    _git("init", "-q", "--bare", bare)
    _git("remote", "add", "origin", repository, cwd=bare)
    spec = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
    try:
        _git("fetch", "-q", "--filter=blob:none", "origin", *spec, cwd=bare, timeout=timeout)
    except SourceError as exc:  # a server without partial clone (only then): fetch it all
        if "filter" not in str(exc).lower():
            raise
        _git("fetch", "-q", "origin", *spec, cwd=bare, timeout=timeout)
    return bare


def resolve(
    repository: str,
    branch: str,
    *,
    run_type: str,
    logical_date: datetime | None,
    git_ref: str = "",
    timeout_seconds: float | None = None,
) -> Resolution:
    """The commit a run builds.

    - a git_ref (manual runs) builds that branch, tag or commit;
    - a backfill builds the last commit on the branch at or before its logical date;
    - anything else (a scheduled run) builds the branch head.
    """
    if git_ref and not GIT_REF_RE.fullmatch(git_ref):
        raise SourceError(f"git_ref {git_ref!r} is not a branch, tag or commit name")
    with tempfile.TemporaryDirectory(prefix="nightly-ci-src-") as tmp:
        bare = _fetch_history(repository, tmp, timeout_seconds)
        if git_ref:
            candidates = [f"refs/remotes/origin/{git_ref}", f"refs/tags/{git_ref}"]
            if COMMIT_RE.fullmatch(git_ref):
                candidates.append(git_ref)
            for candidate in candidates:
                try:
                    commit = _git("rev-parse", "--verify", "-q", f"{candidate}^{{commit}}", cwd=bare)
                except SourceError:
                    continue
                return Resolution(commit, git_ref, f"git_ref {git_ref!r} requested", _date_of(commit, bare))
            raise SourceError(f"git_ref {git_ref!r} is not a branch, tag or commit of {repository}")
        head = f"refs/remotes/origin/{branch}"
        try:
            _git("rev-parse", "--verify", "-q", head, cwd=bare)
        except SourceError:
            raise SourceError(f"branch {branch!r} does not exist in {repository}") from None
        if run_type == "backfill":
            if logical_date is None:
                raise SourceError("a backfill run has no logical date")
            when = logical_date.astimezone(UTC).isoformat()
            commit = _git("rev-list", "-1", "--first-parent", f"--before={when}", head, cwd=bare)
            if not commit:
                raise SourceError(f"branch {branch!r} has no commit at or before {when}")
            return Resolution(
                commit, branch, f"backfill: last commit on {branch} at or before {when}", _date_of(commit, bare)
            )
        commit = _git("rev-parse", head, cwd=bare)
        return Resolution(commit, branch, f"{run_type} run: head of {branch}", _date_of(commit, bare))


def _date_of(commit: str, bare: str) -> str:
    return _git("show", "-s", "--format=%cI", commit, cwd=bare)


def checkout(repository: str, commit: str, dest: str) -> None:
    """The tree of COMMIT in DEST, without its .git (the build context must not carry it)."""
    _git("init", "-q", dest)
    _git("remote", "add", "origin", repository, cwd=dest)
    try:
        _git("fetch", "-q", "--depth", "1", "origin", commit, cwd=dest)
    except SourceError:  # servers that refuse a fetch by commit: fetch the branches
        _git("fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*", cwd=dest)
    _git("-c", "advice.detachedHead=false", "checkout", "-q", commit, cwd=dest)
    subprocess.run(["rm", "-rf", os.path.join(dest, ".git")], check=True)
