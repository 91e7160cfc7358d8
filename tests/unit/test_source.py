"""Which commit a run builds, against a real git repository with dated commits."""

from __future__ import annotations

import os
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dev.sample_repo import make_repo
from include.nightly_ci.build.source import checkout, resolve
from include.nightly_ci.errors import SourceError


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dest = tmp_path_factory.mktemp("src") / "sample.git"
    ids = make_repo(
        dest,
        [
            (utc(2026, 11, 24, 6), "0.1.0", "night 24"),
            (utc(2026, 11, 25, 6), "0.1.1", "night 25"),
            (utc(2026, 11, 26, 8), "0.1.2", "exactly at the 26th's schedule"),
            (utc(2026, 11, 27, 12), None, "after the 27th's schedule"),
        ],
    )
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "tag", "v0.1.1", ids[1]], cwd=dest, check=True, env=env)
    subprocess.run(["git", "branch", "release/0.1", ids[0]], cwd=dest, check=True, env=env)
    return str(dest), ids


def test_scheduled_run_builds_the_branch_head(repo):
    url, ids = repo
    res = resolve(url, "main", run_type="scheduled", logical_date=utc(2026, 11, 25, 8))
    assert res.commit == ids[-1]
    assert "head of main" in res.reason


@pytest.mark.parametrize(
    ("night", "index"),
    [
        (utc(2026, 11, 25, 8), 1),  # the 06:00 commit of that day
        (utc(2026, 11, 26, 8), 2),  # a commit exactly at the logical date counts
        (utc(2026, 11, 27, 8), 2),  # the 12:00 commit came after that night
        (utc(2026, 11, 28, 8), 3),
    ],
)
def test_backfill_builds_the_last_commit_at_or_before_its_night(repo, night, index):
    url, ids = repo
    res = resolve(url, "main", run_type="backfill", logical_date=night)
    assert res.commit == ids[index]


def test_backfill_before_the_first_commit_is_refused(repo):
    url, _ = repo
    with pytest.raises(SourceError, match="no commit at or before 2026-11-01"):
        resolve(url, "main", run_type="backfill", logical_date=utc(2026, 11, 1, 8))


@pytest.mark.parametrize(("ref", "index"), [("v0.1.1", 1), ("release/0.1", 0), ("main", 3)])
def test_manual_run_builds_the_requested_branch_or_tag(repo, ref, index):
    url, ids = repo
    assert resolve(url, "main", run_type="manual", logical_date=None, git_ref=ref).commit == ids[index]


def test_manual_run_builds_a_commit_full_or_abbreviated(repo):
    url, ids = repo
    assert resolve(url, "main", run_type="manual", logical_date=None, git_ref=ids[2]).commit == ids[2]
    assert resolve(url, "main", run_type="manual", logical_date=None, git_ref=ids[2][:10]).commit == ids[2]


@pytest.mark.parametrize("ref", ["no-such-branch", "deadbeefdeadbeef"])
def test_unknown_refs_are_refused(repo, ref):
    url, _ = repo
    with pytest.raises(SourceError, match=f"git_ref '{ref}' is not a branch, tag or commit"):
        resolve(url, "main", run_type="manual", logical_date=None, git_ref=ref)


@pytest.mark.parametrize("ref", ["main; rm -rf /", "$(id)", "-upload-pack=x", "a..b"])
def test_refs_that_are_not_ref_names_are_refused_before_git_runs(repo, ref):
    url, _ = repo
    with pytest.raises(SourceError, match="is not a branch, tag or commit name"):
        resolve(url, "main", run_type="manual", logical_date=None, git_ref=ref)


def test_missing_branch_and_repository(repo, tmp_path):
    url, _ = repo
    with pytest.raises(SourceError, match="branch 'develop' does not exist"):
        resolve(url, "develop", run_type="scheduled", logical_date=None)
    with pytest.raises(SourceError, match="failed"):
        resolve(str(tmp_path / "nowhere.git"), "main", run_type="scheduled", logical_date=None)


def test_checkout_gives_the_tree_of_that_commit_without_git(repo, tmp_path):
    url, ids = repo
    dest = tmp_path / "ctx"
    checkout(url, ids[1], str(dest))
    assert (dest / "src" / "dynamo_sample" / "VERSION").read_text() == "0.1.1\n"
    assert (dest / "container" / "Dockerfile.vllm").exists()
    assert not (dest / ".git").exists()


def test_the_sample_repository_maker_never_deletes_what_it_did_not_make(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"not a sample repository made by dev\.sample_repo: not replacing it"):
        make_repo(precious, [(utc(2026, 11, 24, 6), "0.1.0", "night")])
    assert (precious / "notes.txt").read_text() == "keep me"
    made = tmp_path / "made.git"
    first = make_repo(made, [(utc(2026, 11, 24, 6), "0.1.0", "night")])
    assert make_repo(made, [(utc(2026, 11, 25, 6), "0.1.1", "next")]) != first  # its own: replaced


SHIPPED = Path(__file__).resolve().parents[2] / "include" / "config" / "nightly_ci.yaml"


def config_with_source(tmp_path, source: str) -> Path:
    f = tmp_path / "c.yaml"
    f.write_text(f"extends: {SHIPPED}\nsource:\n{textwrap.indent(textwrap.dedent(source), '  ')}")
    return f


@pytest.mark.parametrize(
    "url",
    [
        "https://x-access-token:ghp_SECRET123@github.com/org/private.git",
        "https://ghp_SECRET123@github.com/org/private.git",
        "http://ci:ghp_SECRET123@127.0.0.1:8080/private.git",
        "ssh://git:ghp_SECRET123@github.com/org/private.git",
    ],
)
def test_check_refuses_credentials_in_the_repository_url_without_echoing_them(tmp_path, url):
    """M5: the URL is shown in the DAG doc and stamped on every image: no secret in it."""
    from include.nightly_ci.config import load_config
    from include.nightly_ci.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(config_with_source(tmp_path, f"repository: '{url}'\n"))
    [finding] = info.value.findings
    assert finding.path == "source.repository" and finding.line
    assert "source.conn_id" in finding.message and "credentials" in finding.message
    assert "ghp_SECRET123" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["https://github.com/org/private.git", "ssh://git@github.com/org/private.git", "git@github.com:org/p.git"]
)
def test_a_repository_url_without_credentials_and_a_connection_pass(tmp_path, url):
    from include.nightly_ci.config import load_config

    cfg = load_config(config_with_source(tmp_path, f"repository: '{url}'\nconn_id: github_nightly\n"))
    assert (cfg.source.repository, cfg.source.conn_id) == (url, "github_nightly")


def test_a_connection_for_a_repository_git_cannot_authenticate_to_is_refused(tmp_path):
    from include.nightly_ci.config import load_config
    from include.nightly_ci.errors import ConfigError

    with pytest.raises(ConfigError, match=r"source.conn_id .*https:// or ssh"):
        load_config(config_with_source(tmp_path, "repository: 'git://127.0.0.1/x.git'\nconn_id: github_nightly\n"))


def test_the_dag_doc_names_the_connection_not_a_secret(tmp_path):
    from include.nightly_ci.dag import _doc
    from include.nightly_ci.plan import load_plan

    url = "https://github.com/org/private.git"
    plan = load_plan(str(config_with_source(tmp_path, f"repository: '{url}'\nconn_id: github_nightly\n")))
    assert plan.source.conn_id == "github_nightly"
    assert f"`{url}`" in _doc(plan) and "Airflow connection `github_nightly`" in _doc(plan)


def test_git_gets_an_http_token_in_its_environment_scoped_to_the_repository_host():
    from include.nightly_ci.build.source import GitAuth, git_env

    auth = GitAuth("github_nightly", header="Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hw")
    env = git_env(auth, "https://github.com/org/private.git", "/nonexistent")
    assert env == {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.https://github.com/.extraHeader",
        "GIT_CONFIG_VALUE_0": "Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hw",
    }
    assert "eC1h" not in repr(auth)
