"""Whether one commit is an ancestor of another, for the moving tags (H1): a manual run
of an older commit must not move `nightly-*` back to it; and the first-parent commits
between two, where the culprit finder searches.

Fetches the two commits and their history only (no trees, no blobs) into a private
temporary folder, once per pair.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from include.nightly_ci.build.source import _GIT_ENV, GitAuth, _credentials, _git
from include.nightly_ci.errors import NightlyCiError, SourceError, SourceUnavailable

log = logging.getLogger(__name__)


def _fetch_commits(bare: str, commits: tuple[str, ...], timeout: float, env: dict[str, str]) -> None:
    """COMMITS and their history, without trees: by commit where the server allows it, else
    every branch and tag; without the filter where the server has no partial clone."""
    refs = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
    for wants in (commits, refs):
        for flags in (("--filter=tree:0",), ()):
            try:
                _git("fetch", "-q", "--no-tags", *flags, "origin", *wants, cwd=bare, timeout=timeout, env=env)
                return
            except SourceUnavailable:
                raise
            except NightlyCiError as exc:
                if wants is refs and flags == ():
                    raise
                log.info("git fetch %s %s: %s; trying another way", " ".join(flags), " ".join(wants), exc)


def _has_commit(bare: str, commit: str) -> bool:
    proc = subprocess.run(
        ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=bare, env={**os.environ, **_GIT_ENV},
        capture_output=True, timeout=60,
    )  # fmt: skip
    return proc.returncode == 0


def ancestry(
    repository: str, auth: GitAuth | None = None, timeout_seconds: float = 300
) -> Callable[[str, str], bool | None]:
    """is_ancestor(a, b) for REPOSITORY's commits (AUTH: a private one's credentials): True,
    False, or None when git could not tell (the caller then leaves the tag where it is). A
    B the repository does not have (history rewritten, or the tag pushed from elsewhere)
    has no ancestors here: False, or a tag would stay on it for good."""

    @cache
    def is_ancestor(a: str, b: str) -> bool | None:
        with tempfile.TemporaryDirectory(prefix="nightly-ci-ancestry-") as bare:
            try:
                _git("init", "-q", "--bare", bare)
                _git("remote", "add", "origin", repository, cwd=bare)
                with _credentials(auth, repository) as env:
                    _fetch_commits(bare, (a, b), timeout_seconds, env)
            except NightlyCiError as exc:
                log.warning("Could not tell whether %s is an ancestor of %s: %s", a[:12], b[:12], exc)
                return None
            if not _has_commit(bare, a):
                log.warning("Could not tell whether %s is an ancestor of %s: %s is not in %s", a[:12], b[:12], a[:12],
                            repository)  # fmt: skip
                return None
            if not _has_commit(bare, b):
                log.info("%s is not in %s (history rewritten, or pushed from elsewhere)", b[:12], repository)
                return False
            # Exit 0: an ancestor; 1: not one; anything else: git could not tell.
            proc = subprocess.run(
                ["git", "merge-base", "--is-ancestor", a, b], cwd=bare, env={**os.environ, **_GIT_ENV},
                capture_output=True, text=True, timeout=timeout_seconds,
            )  # fmt: skip
            if proc.returncode in (0, 1):
                return proc.returncode == 0
            log.warning("git merge-base %s %s: %s", a[:12], b[:12], proc.stderr.strip())
            return None

    return is_ancestor


@dataclass(frozen=True)
class Commit:
    """One commit of a range, as a finding names it."""

    sha: str
    author: str  # "Name <email>"
    subject: str


def first_parent_range(
    repository: str, good: str, bad: str, auth: GitAuth | None = None, timeout_seconds: float = 300
) -> list[Commit]:
    """The commits after GOOD up to BAD on BAD's first-parent line (the branch's own
    history, merges as one commit each), oldest first: where a culprit can be. Fetches
    the history only, no trees. Raises SourceError when GOOD is not an ancestor of BAD."""
    with tempfile.TemporaryDirectory(prefix="nightly-ci-range-") as bare:
        _git("init", "-q", "--bare", bare)
        _git("remote", "add", "origin", repository, cwd=bare)
        with _credentials(auth, repository) as env:
            _fetch_commits(bare, (good, bad), timeout_seconds, env)
        for commit in (good, bad):
            if not _has_commit(bare, commit):
                raise SourceError(f"commit {commit} is not in {repository}")
        if subprocess.run(["git", "merge-base", "--is-ancestor", good, bad], cwd=bare,
                          env={**os.environ, **_GIT_ENV}, capture_output=True).returncode != 0:  # fmt: skip
            raise SourceError(f"{good[:12]} is not an ancestor of {bad[:12]} in {repository}: no range between them")
        out = _git("log", "--first-parent", "--reverse", "--format=%H%x00%an <%ae>%x00%s", f"{good}..{bad}", cwd=bare)
    return [Commit(*line.split("\0", 2)) for line in out.splitlines() if line]
