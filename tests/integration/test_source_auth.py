"""A private repository over HTTP(S) (AUDIT-RELIABILITY.md M5): the token comes from an
Airflow connection (source.conn_id), never the URL, and git gets it in its environment
only. Against `git http-backend` on loopback behind Basic auth, as GitHub serves a private
repository: resolve_source and the build's checkout both fetch with it, and the token is
in no argv, URL, .git/config, log line, XCom, image label or DAG doc."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from dev.sample_repo import make_repo
from include.nightly_ci.build import source
from include.nightly_ci.build.operators import BuildImageOperator, ResolveSourceOperator
from include.nightly_ci.build.source import SourceInfo, checkout, git_auth, resolve
from include.nightly_ci.dag import _doc, build_dag
from include.nightly_ci.errors import PermanentError, SourceError, SourceUnavailable
from include.nightly_ci.names import LABEL_SOURCE
from include.nightly_ci.plan import load_plan
from tests.services import ROOT, GitHttpServer, free_port

pytestmark = pytest.mark.integration
TOKEN = "ghp_S3cretT0kenForNightlyCi0123456789"
BASE = "nightly-ci-base:bookworm-amd64"


@pytest.fixture(scope="module")
def private_repo(tmp_path_factory):
    """A bare repository with two commits, served only to x-access-token:TOKEN; its
    Dockerfile builds in a second from the local base image."""
    tree = tmp_path_factory.mktemp("tree")
    (tree / "container").mkdir()
    (tree / "container" / "Dockerfile.vllm").write_text(
        f"FROM {BASE} AS framework\nCOPY src/dynamo_sample/VERSION /VERSION\nFROM framework AS runtime\n"
    )
    (tree / "src" / "dynamo_sample").mkdir(parents=True)
    (tree / "src" / "dynamo_sample" / "VERSION").write_text("0.0.0\n")
    root = tmp_path_factory.mktemp("git")
    ids = make_repo(
        root / "private.git",
        [(datetime(2026, 11, 24, 6, tzinfo=UTC), "0.1.0", "one"), (datetime(2026, 11, 25, 6, tzinfo=UTC), None, "two")],
        source=tree,
    )
    server = GitHttpServer(root, "x-access-token", TOKEN)
    server.start()
    yield server, server.url("private.git"), ids
    server.stop()


@pytest.fixture
def git_conn(monkeypatch):
    def make(conn_id: str = "git_private", password: str = TOKEN, login: str | None = "x-access-token") -> str:
        body = {"conn_type": "http", "login": login, "password": password}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
        return conn_id

    return make


@pytest.fixture
def git_spy(monkeypatch):
    """Every git command source.py runs (it still runs): its argv, and the config files of
    the repository it ran in, read right after it."""
    seen: list[str] = []
    real = subprocess.run

    def spy(cmd, *args, **kwargs):
        proc = real(cmd, *args, **kwargs)
        seen.append(" ".join(map(str, cmd)))
        cwd = kwargs.get("cwd")
        for config in (Path(cwd or ".") / "config", Path(cwd or ".") / ".git" / "config"):
            if cwd and config.exists():
                seen.append(config.read_text())
        return proc

    monkeypatch.setattr(source.subprocess, "run", spy)
    return seen


def test_resolve_and_checkout_of_a_private_repository_with_the_connection(
    private_repo, git_conn, git_spy, tmp_path, caplog, capfd
):
    server, url, ids = private_repo
    caplog.set_level(logging.DEBUG)
    auth = git_auth(git_conn(), url)
    res = resolve(url, "main", run_type="scheduled", logical_date=None, auth=auth)
    assert res.commit == ids[-1]
    dest = tmp_path / "ctx"
    checkout(url, ids[0], str(dest), auth=auth)
    assert (dest / "src" / "dynamo_sample" / "VERSION").read_text() == "0.1.0\n"
    # git authenticated (the server saw the header) but not through the URL.
    assert any(status == 200 and given.startswith("Basic ") for _, given, status in server.requests)
    assert not any(TOKEN in path for path, _, _ in server.requests)
    # Nowhere else: the commands, the repositories' config, the log, the output, the tree.
    out, err = capfd.readouterr()
    assert git_spy and not [s for s in git_spy if TOKEN in s or "x-access-token:" in s]
    assert TOKEN not in caplog.text + out + err
    assert not [p for p in dest.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def test_the_token_is_masked_in_task_logs_as_soon_as_it_is_read(private_repo, git_conn):
    from airflow.sdk.log import redact

    _, url, _ = private_repo
    git_auth(git_conn("git_masked", password=TOKEN + "-masked"), url)
    assert TOKEN + "-masked" not in str(redact(f"git said {TOKEN}-masked"))


def test_without_the_connection_or_with_a_wrong_token_it_fails_at_once(private_repo, git_conn):
    _, url, _ = private_repo
    with pytest.raises(SourceError, match=r"wants credentials: name its Airflow connection in source.conn_id") as info:
        resolve(url, "main", run_type="scheduled", logical_date=None)
    assert isinstance(info.value, PermanentError)
    wrong = git_auth(git_conn("git_wrong", password="ghp_wrong"), url)
    with pytest.raises(SourceError, match=r"refused the credentials of Airflow connection 'git_wrong'") as info:
        resolve(url, "main", run_type="scheduled", logical_date=None, auth=wrong)
    assert "ghp_wrong" not in str(info.value)


def test_a_connection_without_a_token_is_refused_by_name(private_repo, git_conn):
    _, url, _ = private_repo
    with pytest.raises(SourceError, match=r"connection 'git_empty'.*password"):
        git_auth(git_conn("git_empty", password=""), url)


def test_the_dags_tasks_fetch_with_it_and_hand_on_no_token(
    private_repo, git_conn, registries, monkeypatch, tmp_path, caplog
):
    """resolve_source's XCom, the build's checkout and the image's labels, and the DAG doc,
    for a DAG made from a config naming the connection."""
    _, url, ids = private_repo
    reg = registries()
    for k, v in reg.conn_env("nightly_ci_ecr").items():
        monkeypatch.setenv(k, v)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"extends: {ROOT / 'dev' / 'local.yaml'}\n"
        f"source: {{repository: '{url}', conn_id: {git_conn()}}}\n"
        f"artifacts: {{base: '{tmp_path / 'artifacts'}'}}\n"
    )
    plan = load_plan(str(config))
    dag = build_dag(plan)
    assert url in (dag.doc_md or "") and TOKEN not in (dag.doc_md or "") and "`git_private`" in _doc(plan)
    dag_run = SimpleNamespace(
        dag_id=plan.dag_id, run_id="manual__2026-11-25", run_type="manual", logical_date=None, conf={},
        run_after=datetime(2026, 11, 25, 8, tzinfo=UTC),
    )  # fmt: skip
    resolve_source = dag.task_dict[plan.resolve.task_id]
    assert isinstance(resolve_source, ResolveSourceOperator)
    resolve_source.git_ref = ""  # what its template renders to without a git_ref Param
    xcom = resolve_source.run({"dag_run": dag_run})
    assert xcom["commit"] == ids[-1] and xcom["repository"] == url and TOKEN not in json.dumps(xcom)
    cell = next(c for c in plan.cells if c.arch == "amd64")
    build = dag.task_dict[cell.framework_build.task.task_id]
    assert isinstance(build, BuildImageOperator)
    result = build._build(SourceInfo.from_json(xcom), [], lambda _: None)
    labels = build.engine.inspect_image(result.image_id)["Config"]["Labels"]
    assert labels[LABEL_SOURCE] == url and TOKEN not in json.dumps(labels)
    assert TOKEN not in caplog.text


def test_an_ssh_key_from_the_connection_reaches_ssh_in_a_private_file_gone_afterwards(monkeypatch, tmp_path):
    """No SSH server here: ssh itself runs with the options git is given and fails to
    connect (a bad option or an unreadable key would fail differently); the key file is
    0600 while git runs and gone after."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    key = (tmp_path / "k").read_text()
    host_key = "[127.0.0.1]:22 " + (tmp_path / "k.pub").read_text().strip()
    body = {"conn_type": "ssh", "login": "git", "extra": {"private_key": key, "host_key": host_key}}
    monkeypatch.setenv("AIRFLOW_CONN_GIT_SSH", json.dumps(body))
    url = f"ssh://git@127.0.0.1:{free_port()}/org/private.git"
    auth = git_auth("git_ssh", url)
    assert auth is not None and "PRIVATE" not in repr(auth)
    seen: list[tuple[str, int]] = []
    real = subprocess.run

    def spy(cmd, *args, **kwargs):
        command = (kwargs.get("env") or {}).get("GIT_SSH_COMMAND", "")
        if command:
            key_file = command.split(" -i ", 1)[1].split()[0]
            seen.append((key_file, os.stat(key_file).st_mode & 0o777))
            assert "PRIVATE" not in " ".join(cmd)
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(source.subprocess, "run", spy)
    with pytest.raises(SourceUnavailable, match=r"ssh: connect to host 127\.0\.0\.1 port \d+: Connection refused"):
        resolve(url, "main", run_type="scheduled", logical_date=None, auth=auth)
    assert seen and all(mode == 0o600 for _, mode in seen)
    assert not any(os.path.exists(path) for path, _ in seen)
