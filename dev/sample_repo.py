"""Make the sample project a git repository with dated history, so that source
resolution (branch head, a tag, the last commit before a night) is real.

`python -m dev.sample_repo DEST [--nights N]` creates a bare repository
DEST whose branch `main` has one commit per night for the last N nights (06:00 UTC,
before the 08:00 schedule), each with a different VERSION, then the project as it is
now. It is left alone when it already holds the current tree. `--flaky` then adds a
commit that makes the sample's test_flaky_on_every_other_run flaky (add_flaky_marker).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "sample_project"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "nightly-ci",
    "GIT_AUTHOR_EMAIL": "ci@localhost",
    "GIT_COMMITTER_NAME": "nightly-ci",
    "GIT_COMMITTER_EMAIL": "ci@localhost",
}


def _git(*args: str, cwd: str | Path, when: datetime | None = None) -> str:
    env = {**os.environ, **_IDENTITY, "GIT_CONFIG_NOSYSTEM": "1"}
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = when.isoformat()
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


MARK = "nightly-ci-sample"  # a file in every repository made here: only those are ever replaced


def make_repo(dest: Path, commits: Iterable[tuple[datetime, str | None, str]], source: Path = SAMPLE) -> list[str]:
    """A bare repository at DEST from COMMITS: (date, VERSION or None for the project
    as it is, message). Returns the commit ids in order. An existing DEST is replaced
    only when this module made it (or it is an empty folder): nothing else is deleted."""
    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()) and not _made_here(dest):
        raise FileExistsError(f"{dest} exists and is not a sample repository made by {__name__}: not replacing it")
    shutil.rmtree(dest, ignore_errors=True)
    ids = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(source, work, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        version_file = work / "src" / "dynamo_sample" / "VERSION"
        current_version = version_file.read_text()
        _git("init", "-q", "-b", "main", cwd=work)
        for when, version, message in commits:
            version_file.write_text(f"{version}\n" if version else current_version)
            _git("add", "-A", cwd=work)
            _git("commit", "-q", "--allow-empty", "-m", message, cwd=work, when=when)
            ids.append(_git("rev-parse", "HEAD", cwd=work))
        _git("clone", "-q", "--bare", str(work), str(dest), cwd=tmp)
    (dest / MARK).write_text("made by dev/sample_repo.py; replaced when the sample project changes\n")
    return ids


# The file that makes tests/unit/test_flaky.py fail on every other run; only a commit adds it.
FLAKY_MARKER = "tests/unit/flaky-marker"


def add_commit(dest: Path, files: dict[str, str], message: str, when: datetime | None = None) -> str:
    """A commit on DEST's main (a bare repository made here) writing FILES (path -> text); its id."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        _git("clone", "-q", "-b", "main", str(dest.resolve()), str(work), cwd=tmp)
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        _git("add", "-A", cwd=work)
        _git("commit", "-q", "-m", message, cwd=work, when=when)
        _git("push", "-q", "origin", "main", cwd=work)
        return _git("rev-parse", "HEAD", cwd=work)


# A commit that breaks the router's round robin (every request to the first worker), and
# the test that then fails: the regression the culprit finder's tests plant.
ROUTER = "src/dynamo_sample/router.py"
BROKEN_TEST = "tests.unit.test_router::test_round_robin"
BROKEN_ROUTER = '''"""Round-robin routing of requests over workers."""

from __future__ import annotations


class Router:
    def __init__(self, workers: list[str]):
        if not workers:
            raise ValueError("a router needs at least one worker")
        self._workers = workers

    def route(self, request: str) -> tuple[str, str]:
        return self._workers[0], request
'''


def add_commits(dest: Path, count: int, *, culprit_at: int | None = None, prefix: str = "change") -> list[str]:
    """COUNT commits on DEST's main (a bare repository made here), each adding a line to
    the package's CHANGES.txt (so each commit's image differs, as a real commit's does);
    the one at index CULPRIT_AT (0-based) also breaks the router. Their ids, oldest first:
    a range with a planted culprit."""
    ids = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        _git("clone", "-q", "-b", "main", str(dest.resolve()), str(work), cwd=tmp)
        for i in range(count):
            with (work / "src" / "dynamo_sample" / "CHANGES.txt").open("a") as changes:
                changes.write(f"{prefix} {i + 1}\n")
            message = f"{prefix} {i + 1} of {count}"
            if i == culprit_at:
                (work / ROUTER).write_text(BROKEN_ROUTER)
                message += ": route to the first worker only"
            _git("add", "-A", cwd=work)
            _git("commit", "-q", "-m", message, cwd=work)
            ids.append(_git("rev-parse", "HEAD", cwd=work))
        _git("push", "-q", "origin", "main", cwd=work)
    return ids


def add_flaky_marker(dest: Path, when: datetime | None = None) -> str:
    """A commit that makes test_flaky_on_every_other_run flaky in the images built from it."""
    text = "test_flaky.py fails on the suite's run and even reruns while this file exists\n"
    return add_commit(dest, {FLAKY_MARKER: text}, "make test_flaky_on_every_other_run flaky", when)


def _made_here(dest: Path) -> bool:
    """DEST is a sample repository of this module's: marked, or (made before the mark
    existed) a bare repository whose every commit is this module's identity's."""
    if (dest / MARK).exists():
        return True
    try:
        authors = set(_git(f"--git-dir={dest.resolve()}", "log", "--all", "--format=%ae", cwd=dest).split())
    except subprocess.CalledProcessError:
        return False
    return authors == {_IDENTITY["GIT_AUTHOR_EMAIL"]}


def nightly_history(nights: int, now: datetime) -> list[tuple[datetime, str | None, str]]:
    today = now.astimezone(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    history: list[tuple[datetime, str | None, str]] = [
        (today - timedelta(days=n), f"0.1.{nights - n}", f"night -{n}: version 0.1.{nights - n}")
        for n in range(nights, 0, -1)
    ]
    history.append((now, None, "the project as it is now"))
    return history


def _tree_matches(dest: Path, source: Path) -> bool:
    """Does DEST's main hold exactly SOURCE's files?"""
    if not (dest / "HEAD").exists():
        return False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        shutil.copytree(source, work, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        _git("init", "-q", cwd=work)
        _git("add", "-A", cwd=work)
        want = _git("write-tree", cwd=work)
    try:
        return _git("rev-parse", "main^{tree}", cwd=dest) == want
    except subprocess.CalledProcessError:
        return False


def ensure_repo(dest: Path, nights: int = 5, force: bool = False) -> str:
    """DEST made from the sample project unless it already holds the current tree; what was done."""
    if not force and _tree_matches(dest, SAMPLE):
        return f"sample repository {dest}: up to date"
    ids = make_repo(dest, nightly_history(nights, datetime.now(UTC)))
    return f"sample repository {dest}: {len(ids)} commits, main at {ids[-1][:12]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--nights", type=int, default=5)
    parser.add_argument("--force", action="store_true", help="recreate even if it holds the current tree")
    parser.add_argument("--flaky", action="store_true", help="then commit the flaky marker (see add_flaky_marker)")
    args = parser.parse_args(argv)
    print(ensure_repo(args.dest, args.nights, args.force))
    if args.flaky:
        print(f"flaky marker committed: main at {add_flaky_marker(args.dest)[:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
