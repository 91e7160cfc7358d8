"""What the build's checkout brings (AUDIT-RELIABILITY.md L12): the machine's system git
config (proxies, CAs, URL rewrites that corporate hosts set) is honoured, submodules
come with the tree, and a repository using Git LFS is never built from pointer files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from include.nightly_ci.build.source import checkout, resolve
from include.nightly_ci.errors import SourceError
from tests.services import GitServer

pytestmark = pytest.mark.integration


def git(*args: str, cwd: Path) -> str:
    env = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(cwd), "PATH": "/usr/bin:/bin"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def bare_repo(root: Path, name: str, files: dict[str, str], submodule: tuple[str, str] | None = None) -> str:
    work = root / f"{name}-work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    if submodule:
        url, path = submodule
        git("-c", "protocol.allow=always", "submodule", "add", "-q", url, path, cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", name, cwd=work)
    git("clone", "-q", "--bare", str(work), str(root / f"{name}.git"), cwd=root)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def server(tmp_path):
    repos = tmp_path / "repos"
    repos.mkdir()
    s = GitServer(repos)
    s.start()
    yield s, repos
    s.stop()


def test_the_system_git_config_is_honoured(server, tmp_path, monkeypatch):
    """A URL rewrite in the system config (here a file of the test's own, through
    GIT_CONFIG_SYSTEM): with it ignored, the repository could not be found at all."""
    s, repos = server
    commit = bare_repo(repos, "app", {"README": "app\n"})
    system = tmp_path / "gitconfig"
    system.write_text(f'[url "{s.url("")}"]\n\tinsteadOf = corp://git.internal/\n')
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", str(system))
    assert resolve("corp://git.internal/app.git", "main", run_type="scheduled", logical_date=None).commit == commit


def test_submodules_come_with_the_checkout(server, tmp_path):
    s, repos = server
    bare_repo(repos, "lib", {"lib.py": "VALUE = 42\n"})
    commit = bare_repo(repos, "app", {"README": "app\n"}, submodule=(s.url("lib.git"), "third_party/lib"))
    dest = tmp_path / "ctx"
    checkout(s.url("app.git"), commit, str(dest))
    assert (dest / "third_party" / "lib" / "lib.py").read_text() == "VALUE = 42\n"
    assert not (dest / ".git").exists() and not (dest / "third_party" / "lib" / ".git").exists()


def test_a_repository_using_git_lfs_is_not_built_from_pointer_files(server, tmp_path):
    s, repos = server
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 12\n"
    commit = bare_repo(
        repos, "app", {".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n", "w.bin": pointer}
    )
    dest = tmp_path / "ctx"
    if shutil.which("git-lfs") is None:  # this machine: a clear error, not a build of pointers
        with pytest.raises(SourceError, match=r"uses Git LFS.*install git-lfs"):
            checkout(s.url("app.git"), commit, str(dest))
    else:  # pragma: no cover - a worker with git-lfs: the LFS objects are fetched (or the fetch fails loudly)
        with pytest.raises(SourceError):
            checkout(s.url("app.git"), commit, str(dest))  # the object behind the pointer does not exist
