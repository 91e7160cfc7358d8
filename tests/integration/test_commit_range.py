"""The commits a culprit can be: the first-parent line between two commits of a real git
repository served over file:// (a feature branch merged with --no-ff counts as its merge)."""

from __future__ import annotations

import os
import subprocess

import pytest

from include.nightly_ci.build.ancestry import Commit, first_parent_range
from include.nightly_ci.errors import SourceError

ENV = {**os.environ, "GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "ann@example.com",
       "GIT_COMMITTER_NAME": "Ann", "GIT_COMMITTER_EMAIL": "ann@example.com"}  # fmt: skip


def git(*args: str, cwd) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """main: c0 .. c3, a feature branch of two commits merged as m4, then c5; served bare."""
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    shas = {}
    for i in range(4):
        (work / "f").write_text(str(i))
        git("add", "f", cwd=work)
        git("commit", "-qm", f"c{i}", cwd=work)
        shas[f"c{i}"] = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    for name in ("f1", "f2"):
        (work / name).write_text(name)
        git("add", name, cwd=work)
        git("commit", "-qm", name, cwd=work)
    git("checkout", "-q", "main", cwd=work)
    git("merge", "-q", "--no-ff", "-m", "m4: merge feature", "feature", cwd=work)
    shas["m4"] = git("rev-parse", "HEAD", cwd=work)
    (work / "f").write_text("5")
    git("commit", "-qam", "c5: the last", cwd=work)
    shas["c5"] = git("rev-parse", "HEAD", cwd=work)
    bare = tmp_path / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    return f"file://{bare}", shas


def test_the_range_is_the_first_parent_line_oldest_first_with_authors_and_subjects(repo):
    url, shas = repo
    got = first_parent_range(url, shas["c1"], shas["c5"])
    assert [c.subject for c in got] == ["c2", "c3", "m4: merge feature", "c5: the last"]
    assert got[0] == Commit(shas["c2"], "Ann <ann@example.com>", "c2")
    assert first_parent_range(url, shas["c3"], shas["c3"]) == []


def test_a_range_that_is_not_one_is_refused_saying_why(repo):
    url, shas = repo
    with pytest.raises(SourceError, match="is not an ancestor of"):
        first_parent_range(url, shas["c5"], shas["c1"])
    with pytest.raises(SourceError, match=f"commit {'0' * 40} is not in"):
        first_parent_range(url, "0" * 40, shas["c5"])
