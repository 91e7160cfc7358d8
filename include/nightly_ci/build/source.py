"""Which commit a run builds, and a checkout of it for the build context.

Plain git through subprocess into a private temporary folder: nothing is shared between
workers, and the resolved commit (not the ref) is what every later task uses.

A private repository's credentials come from an Airflow connection (GitAuth), never the
URL: the URL is shown in the DAG doc, handed on in XCom and stamped on every image. Git
gets them in its environment only (not argv, which any user of the machine can read, and
not a .git/config): an HTTP header as GIT_CONFIG_* variables, or an SSH key in a 0600
file of a private folder that is gone when the command is.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from include.nightly_ci.errors import SourceError, SourceUnavailable
from include.nightly_ci.names import COMMIT_RE, GIT_REF_RE
from include.nightly_ci.records import JsonRecord

log = logging.getLogger(__name__)
# No prompts; over HTTP(S) a transfer slower than 1 kB/s for 60 s is given up. The system
# config (/etc/gitconfig: a corporate proxy, CA, URL rewrites) is honoured (L12).
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
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


@dataclass(frozen=True)
class GitAuth:
    """What git proves itself with to a private repository, from Airflow connection CONN_ID:
    an HTTP header (https) or an SSH private key, with the server's key to trust."""

    conn_id: str
    header: str = field(default="", repr=False)  # "Authorization: Basic ..."
    ssh_key: str = field(default="", repr=False)  # the private key, PEM/OpenSSH text
    host_key: str = ""  # a known_hosts line for the server; "" with check_host_key: the user's known_hosts
    check_host_key: bool = True


def _is_http(repository: str) -> bool:
    return repository.lower().startswith(("https://", "http://"))


def git_auth(conn_id: str | None, repository: str) -> GitAuth | None:
    """The credentials of CONN_ID for REPOSITORY, masked in task logs the moment they are
    read; None without a connection. For https:// the connection's login and password are
    the user and the token (no login: x-access-token, GitHub's user for tokens); for ssh
    the key is extra private_key (else the password), as the SSH provider keeps it, and
    extra host_key / no_host_key_check say how to trust the server."""
    if not conn_id:
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.log import mask_secret

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    if _is_http(repository):
        if not conn.password:
            raise SourceError(f"git connection {conn_id!r} has no password (the token) for {repository}")
        basic = base64.b64encode(f"{conn.login or 'x-access-token'}:{conn.password}".encode()).decode()
        mask_secret(conn.password)
        mask_secret(basic)
        return GitAuth(conn_id, header=f"Authorization: Basic {basic}")
    key = str(extra.get("private_key") or conn.password or "")
    if "PRIVATE KEY" not in key:
        raise SourceError(f"git connection {conn_id!r} has no SSH private key (extra private_key) for {repository}")
    if extra.get("private_key_passphrase"):
        raise SourceError(f"git connection {conn_id!r}: a key with a passphrase can't be used unattended")
    mask_secret(key)
    no_check = str(extra.get("no_host_key_check", "false")).lower() == "true"
    return GitAuth(conn_id, ssh_key=key, host_key=str(extra.get("host_key") or ""), check_host_key=not no_check)


def git_env(auth: GitAuth | None, repository: str, folder: str) -> dict[str, str]:
    """What git's environment adds for AUTH on REPOSITORY; an SSH key and the server's key
    are written to FOLDER (private, the caller's to remove). The HTTP header is scoped to
    the repository's scheme, host and port: a redirect elsewhere does not carry it."""
    if auth is None:
        return {}
    if auth.header:
        parts = urlsplit(repository)
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{parts.netloc}/.extraHeader",
            "GIT_CONFIG_VALUE_0": auth.header,
        }
    key = os.path.join(folder, "id")
    _private_file(key, auth.ssh_key.strip() + "\n")
    ssh = ["ssh", "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
    if auth.host_key:
        known = os.path.join(folder, "known_hosts")
        _private_file(known, auth.host_key.strip() + "\n")
        ssh += ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
    elif not auth.check_host_key:
        ssh += ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"]
    return {"GIT_SSH_COMMAND": shlex.join(ssh)}


def _private_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# What git says when the server wants credentials it did not get or did not accept.
_REFUSED = re.compile(r"could not read username|authentication failed|permission denied \(publickey", re.IGNORECASE)


@contextlib.contextmanager
def _credentials(auth: GitAuth | None, repository: str) -> Iterator[dict[str, str]]:
    """git_env for AUTH in a private folder that is removed, key and all, afterwards. A
    refusal says which connection was refused, or that none was given."""
    with tempfile.TemporaryDirectory(prefix="nightly-ci-git-auth-") as folder:
        os.chmod(folder, 0o700)
        try:
            yield git_env(auth, repository, folder)
        except SourceError as exc:
            if not _REFUSED.search(str(exc)):
                raise
            if auth is None:
                why = "wants credentials: name its Airflow connection in source.conn_id"
            else:
                why = f"refused the credentials of Airflow connection {auth.conn_id!r}"
            raise SourceError(f"{repository} {why} ({exc})") from None


def _git(*args: str, cwd: str | None = None, timeout: float | None = None, env: dict[str, str] | None = None) -> str:
    """git ARGS (ENV added to its environment: credentials); SourceUnavailable (retried)
    for what the network or server may mend, SourceError (not retried) for anything else."""
    env = {**os.environ, **_GIT_ENV, **(env or {})}
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


def _fetch_history(repository: str, workdir: str, timeout: float | None = None, auth: GitAuth | None = None) -> str:
    """A bare, blob-less copy of the repository's refs and history (no file contents)."""
    bare = os.path.join(workdir, "history.git")
    _git("init", "-q", "--bare", bare)
    _git("remote", "add", "origin", repository, cwd=bare)
    spec = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
    with _credentials(auth, repository) as env:
        try:
            _git("fetch", "-q", "--filter=blob:none", "origin", *spec, cwd=bare, timeout=timeout, env=env)
        except SourceError as exc:  # a server without partial clone (only then): fetch it all
            if "filter" not in str(exc).lower():
                raise
            _git("fetch", "-q", "origin", *spec, cwd=bare, timeout=timeout, env=env)
    return bare


def resolve(
    repository: str,
    branch: str,
    *,
    run_type: str,
    logical_date: datetime | None,
    git_ref: str = "",
    timeout_seconds: float | None = None,
    auth: GitAuth | None = None,
) -> Resolution:
    """The commit a run builds.

    - a git_ref (manual runs) builds that branch, tag or commit;
    - a backfill builds the last commit on the branch at or before its logical date;
    - anything else (a scheduled run) builds the branch head.
    """
    if git_ref and not GIT_REF_RE.fullmatch(git_ref):
        raise SourceError(f"git_ref {git_ref!r} is not a branch, tag or commit name")
    with tempfile.TemporaryDirectory(prefix="nightly-ci-src-") as tmp:
        bare = _fetch_history(repository, tmp, timeout_seconds, auth)
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


def checkout(repository: str, commit: str, dest: str, auth: GitAuth | None = None) -> None:
    """The tree of COMMIT in DEST, without its .git (the build context must not carry it)."""
    _git("init", "-q", dest)
    _git("remote", "add", "origin", repository, cwd=dest)
    with _credentials(auth, repository) as env:
        try:
            _git("fetch", "-q", "--depth", "1", "origin", commit, cwd=dest, env=env)
        except SourceError:  # servers that refuse a fetch by commit: fetch the branches
            refs = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
            _git("fetch", "-q", "origin", *refs, cwd=dest, env=env)
    _git("-c", "advice.detachedHead=false", "checkout", "-q", commit, cwd=dest)
    with _credentials(auth, repository) as env:  # what a plain checkout leaves out (L12)
        if os.path.exists(os.path.join(dest, ".gitmodules")):
            _git("submodule", "update", "--init", "--recursive", cwd=dest, env=env)
        _lfs_objects(repository, dest, env)
    # No .git anywhere: the repository's, and each submodule's link to it.
    subprocess.run(["find", dest, "-name", ".git", "-prune", "-exec", "rm", "-rf", "{}", "+"], check=True)


def _lfs_objects(repository: str, dest: str, env: dict[str, str]) -> None:
    """A repository whose .gitattributes sends files through Git LFS gets them fetched;
    without git-lfs on the worker the build would copy pointer files: a clear error."""
    attributes = os.path.join(dest, ".gitattributes")
    if not os.path.exists(attributes):
        return
    with open(attributes) as f:
        if "filter=lfs" not in f.read():
            return
    if shutil.which("git-lfs") is None:
        raise SourceError(
            f"{repository} uses Git LFS (filter=lfs in .gitattributes): install git-lfs on the build workers"
        )
    _git("lfs", "pull", cwd=dest, env=env)
