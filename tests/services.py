"""Real services on loopback for the tests, and helpers to drive Airflow in a subprocess."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import glob
import itertools
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from include.nightly_ci.images.registries import RemoteImage

ROOT = Path(__file__).resolve().parents[1]


def _setup() -> list[str]:
    """The local setup's state folder, engine and ports, as scripts/env.sh (the one place
    that says them) makes them from the NIGHTLY_CI_* settings."""
    shown = '"$STATE" "$DOCKER_HOST" "$ECR_PORT" "$ACR_PORT" "$SLACK_PORT"'
    proc = subprocess.run(
        ["bash", "-c", f'source "$1" && printf "%s\\n" {shown}', "_", str(ROOT / "scripts" / "env.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.splitlines()


_STATE, ENGINE, _ECR, _ACR, _SLACK = _setup()
STATE = Path(_STATE)  # the setup's state folder
ECR_PORT, ACR_PORT, SLACK_PORT = int(_ECR), int(_ACR), int(_SLACK)  # the setup's registries and stand-in Slack


# Ports for the tests' servers: a band of each test process's own, below the kernel's
# ephemeral ports (32768 and up): two pytest-xdist workers never pick the same port, and
# no outgoing connection is given one between its pick and its server's bind (a port the
# kernel picks with bind(0) is an ephemeral one, which any connect() may take meanwhile).
PORTS_FROM, PORTS_PER_PROCESS = 10000, 1000  # the controller or a run without workers: the first band


def port_band(worker: str | None = None) -> range:
    """The ports of the pytest process WORKER (PYTEST_XDIST_WORKER: gw0, gw1, ...; none
    when pytest runs without workers)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    index = int(worker[2:]) + 1 if worker.startswith("gw") else 0
    if PORTS_FROM + PORTS_PER_PROCESS * (index + 1) > 32768:
        raise RuntimeError(f"no port band for pytest-xdist worker {worker}: run fewer workers")
    start = PORTS_FROM + PORTS_PER_PROCESS * index
    return range(start, start + PORTS_PER_PROCESS)


_port_turn = itertools.count(os.getpid())  # where in the band this process starts


def free_port() -> int:
    """A port of this process's band that nothing listens on, each port in turn (a port
    just handed out is not handed out again until the band has gone round)."""
    band = port_band()
    for _ in band:
        port = band[next(_port_turn) % len(band)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # taken, or closing
                continue
            return port
    raise RuntimeError(f"no free port in {band.start}-{band.stop - 1}")


def ensure_provisioned() -> None:
    import docker

    try:
        docker.APIClient(base_url=ENGINE).ping()
        client = docker.APIClient(base_url=ENGINE)
        client.inspect_image("nightly-ci-base:bookworm-arm64")
        return
    except Exception:
        pass
    subprocess.run(["bash", str(ROOT / "scripts" / "provision.sh")], check=True)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready within {timeout} s")


class LocalRegistry:
    """Debian's distribution registry with htpasswd auth on 127.0.0.1:PORT."""

    def __init__(self, root: Path, user: str = "ci", password: str | None = None, port: int | None = None):
        self.root = root
        self.user = user
        self.password = password or secrets.token_urlsafe(12)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", user, self.password], check=True, capture_output=True, text=True
        ).stdout
        (root / "htpasswd").write_text(htpasswd)
        (root / "config.yml").write_text(
            "version: 0.1\nlog: {level: warn}\n"
            f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n  delete: {{enabled: true}}\n"
            f"http: {{addr: 127.0.0.1:{self.port}}}\n"
            f"auth:\n  htpasswd: {{realm: test, path: {root / 'htpasswd'}}}\n"
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> bool:
        try:
            return requests.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401)
        except requests.ConnectionError:
            return False

    def start(self) -> None:
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(self.root / "config.yml")], stdout=log, stderr=log
        )
        wait_for(self.up, 15, f"registry on {self.host}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def conn_env(self, conn_id: str, conn_type: str = "docker", password: str | None = None) -> dict[str, str]:
        conn = {"conn_type": conn_type, "host": self.host, "login": self.user, "password": password or self.password}
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}

    def client(self):
        """The project's own registry API client, logged in as this registry's user."""
        from include.nightly_ci.images.registries import RegistryAuth, RegistryClient

        return RegistryClient(RegistryAuth("t", "t", self.host, self.user, self.password))

    def tags(self, repository: str) -> list[str]:
        resp = requests.get(
            f"http://{self.host}/v2/{repository}/tags/list", auth=(self.user, self.password), timeout=10
        )
        return sorted(resp.json().get("tags") or []) if resp.status_code == 200 else []


def present(image: RemoteImage | None) -> RemoteImage:
    """IMAGE, which the test expects the registry to hold."""
    assert image is not None, "the registry does not hold the image"
    return image


DOCKER_CLI = os.environ.get("DOCKER_CLI", "/usr/bin/docker")  # Debian's: BuildKit built in


def build_sample(arch: str, framework: str = "vllm", target: str = "runtime", **changes) -> str:
    """The sample project's TARGET for ARCH, built with BuildKit on the local engine, as the
    nightly builds it (no secrets: the wheel step then records a local sccache); its id."""
    import tempfile

    from include.nightly_ci.build.builder import BuildKit, BuildSpec

    spec = BuildSpec(
        context_dir=str(ROOT / "dev" / "sample_project"),
        dockerfile=f"container/Dockerfile.{framework}",
        target=target,
        platform=f"linux/{arch}",
        tag=f"nightly-ci-test/sample-{framework}:{target}-{arch}",
        build_args={"FRAMEWORK": framework, "ARCH": arch, "ARCH_ALT": "aarch64" if arch == "arm64" else "x86_64"},
        labels={"purpose": "nightly-ci-test"},
        network_mode="none",
    )
    for key, value in changes.items():
        spec = dataclasses.replace(spec, **{key: value})
    with tempfile.TemporaryDirectory() as tmp:
        return BuildKit(DOCKER_CLI, {}).build(spec, os.path.join(tmp, "iid"), lambda _: None).image_id


@contextlib.contextmanager
def empty_engine_of_its_own(name: str, *images: str) -> Iterator[ScratchEngine]:
    """A Docker engine of the caller's own holding only IMAGES (the base images the builds
    need, loaded from the setup's engine) and no build cache: what an emptied builder is,
    without emptying the engine every other test builds and runs on at the same time.

    BuildKit keys a step by its inputs, not by the secrets it mounts: after a build
    without secrets (build_sample's), the wheel step of a build with them would come from
    the cache, never having seen them; here it cannot."""
    import docker

    engine = ScratchEngine(name)
    try:
        engine.start()
        engine.load_from(docker.APIClient(base_url=ENGINE, timeout=300), *images)
        yield engine
    finally:
        engine.stop()


AMD64_BASES = ("nightly-ci-base:bookworm-amd64", "nightly-ci-runtime:bookworm-amd64")  # what an amd64 cell builds from
ALL_BASES = (*AMD64_BASES, "nightly-ci-base:bookworm-arm64", "nightly-ci-runtime:bookworm-arm64")


BASE_IMAGES = ("nightly-ci-base:", "nightly-ci-runtime:")  # made by provision.sh, never built


def non_base_images(client) -> list[dict]:
    """The engine's images other than the locally made base images (BASE_IMAGES), the
    classic builder's untagged intermediate images included: a tagged image can be the
    parent of one of those, and the engine refuses to delete it while that child is
    there (409 "image has dependent child images")."""
    return [i for i in client.images(all=True) if not any(t.startswith(BASE_IMAGES) for t in i["RepoTags"] or [])]


def airflow_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def airflow_db() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=airflow_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


class NightServer:
    """tests/night_server.py for this pytest process: started on first use with this
    process's environment, stopped at its exit."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="nci-nights-", dir="/tmp"))  # short: a socket lives here
        self.socket = str(self.folder / "socket")
        self.env = airflow_env()
        log = (self.folder / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.night_server", self.socket],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

        def listening() -> bool:
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            with socket.socket(socket.AF_UNIX) as s:
                return s.connect_ex(self.socket) == 0

        wait_for(listening, 120, "the night server")
        atexit.register(self.stop)

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a command with ENV runs as it would in a process of its own: Airflow's
        settings (AIRFLOW_HOME, AIRFLOW__*) and the module path are the server's."""

        def fixed(e: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in e.items() if k.startswith("AIRFLOW__") or k in ("AIRFLOW_HOME", "PYTHONPATH")}

        return self.proc.poll() is None and fixed(env) == fixed(self.env)

    def run(self, argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        output = tempfile.NamedTemporaryFile(dir=self.folder, suffix=".log", delete=False)  # noqa: SIM115 - named
        output.close()
        request = {"argv": argv, "env": env, "cwd": os.getcwd(), "output": output.name}
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(self.socket)
            conn.sendall(json.dumps(request).encode() + b"\n")
            conn.settimeout(timeout)
            answers = conn.makefile("rb")
            pid = int(answers.readline())
            try:
                line = answers.readline()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, 9)
                raise subprocess.TimeoutExpired(["airflow", *argv], timeout, Path(output.name).read_text()) from None
        out = Path(output.name).read_text(errors="replace")
        os.unlink(output.name)
        if not line:
            raise RuntimeError(f"the night server lost `airflow {' '.join(argv)}` (pid {pid}):\n{out[-3000:]}")
        return subprocess.CompletedProcess(["airflow", *argv], int(line), out, None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        shutil.rmtree(self.folder, ignore_errors=True)


_night_server: NightServer | None = None


def airflow_command(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`airflow ARGV` with ENV, its stdout and stderr together in .stdout: forked from this
    process's night server where it can run the command as a process of its own would,
    else in a process of its own."""
    global _night_server
    if _night_server is None or _night_server.proc.poll() is not None:
        _night_server = NightServer()
    if _night_server.serves(env):
        return _night_server.run(argv, env, timeout)
    return subprocess.run(
        [sys.executable, "-m", "airflow", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout,
    )  # fmt: skip


def run_dag(
    config: Path,
    *,
    logical_date: str | None = None,
    conf: dict | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    """`airflow dags test nightly_ci` for CONFIG in a subprocess; stdout+stderr in .stdout."""
    argv = ["dags", "test", "nightly_ci"]
    if logical_date:
        argv.append(logical_date)
    if conf:
        argv += ["-c", json.dumps(conf)]
    # Each test's own history store, beside its config: nights of other tests are not its past.
    history = json.dumps({"conn_type": "sqlite", "host": str(config.parent / "history.db")})
    extra = {"NIGHTLY_CI_CONFIG": str(config), "AIRFLOW_CONN_NIGHTLY_CI_HISTORY": history, **(env or {})}
    return airflow_command(argv, airflow_env(extra), timeout)


def run_culprit(
    config: Path, conf: dict, *, env: dict[str, str] | None = None, max_steps: int = 20, timeout: float = 900
) -> list[tuple[str, str]]:
    """A culprit search from CONF to its end, as the scheduler would run it: `airflow dags
    test nightly_ci_culprit` with CONF, then each run the step triggered (queued in
    Airflow's database, with its conf): taken from the queue and run the same way. Returns
    (the queued run's id, that run's output) for the first run ('' as its id) and each next."""
    steps, run_id = [], ""
    for _ in range(max_steps):
        argv = ["dags", "test", "nightly_ci_culprit", "-c", json.dumps(conf)]
        history = json.dumps({"conn_type": "sqlite", "host": str(config.parent / "history.db")})
        extra = {"NIGHTLY_CI_CONFIG": str(config), "AIRFLOW_CONN_NIGHTLY_CI_HISTORY": history, **(env or {})}
        proc = airflow_command(argv, airflow_env(extra), timeout)
        steps.append((run_id, proc.stdout))
        assert "DagRun Finished" in proc.stdout and "state=success" in proc.stdout.split("DagRun Finished")[-1], (
            proc.stdout[-5000:]
        )
        queued = take_queued_runs("nightly_ci_culprit")
        if not queued:
            return steps
        assert len(queued) == 1, f"a step triggers one next step, not {queued}"
        run_id, conf = queued[0]
    raise AssertionError(f"the search took more than {max_steps} steps")


def take_queued_runs(dag_id: str) -> list[tuple[str, dict]]:
    """The queued runs of DAG_ID (their ids and confs), taken out of Airflow's database."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import delete, select

    with create_session() as session:
        query = select(DagRun).where(DagRun.dag_id == dag_id, DagRun.state == DagRunState.QUEUED)
        runs = [(r.run_id, dict(r.conf or {})) for r in session.scalars(query)]
        session.execute(delete(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id.in_([r for r, _ in runs])))
    return runs


def dag_runs(dag_id: str) -> list[dict[str, str]]:
    """The runs Airflow holds of DAG_ID (run_id, state, logical_date in ISO 8601, '' when it
    has none), from the session's metadata database: what `airflow dags list-runs` lists,
    without starting Airflow's command line (seconds of CPU) to read a table."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id))
        return [
            {
                "run_id": r.run_id,
                "state": str(r.state or ""),
                "logical_date": r.logical_date.isoformat() if r.logical_date else "",
            }
            for r in runs
        ]


def task_states(dag_id: str, run_id: str) -> dict[str, str]:
    """Each task's state in the run (a mapped task's: its last instance's), from the
    session's metadata database, as `airflow tasks states-for-dag-run` says them."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(TaskInstance.task_id, TaskInstance.state)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        .order_by(TaskInstance.task_id, TaskInstance.map_index)
    )
    with create_session() as session:
        return {task_id: str(state or "") for task_id, state in session.execute(query)}


def run_id_of(output: str) -> str:
    """The run id `airflow dags test` used (it is not derived from the logical date)."""
    import re

    found = re.findall(r"DagRun Finished: dag_id=\S+, logical_date=[^,]+, run_id=([^,]+),", output)
    assert found, "no finished DagRun in the output"
    return found[-1]


def write_config(path: Path, body: str) -> Path:
    """A config extending the local one (dev/local.yaml) with BODY on top."""
    path.write_text(f"extends: {ROOT / 'dev' / 'local.yaml'}\n{body}")
    return path


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


class MotoServer:
    """moto in server mode on loopback: ECR and S3 speaking the real AWS APIs."""

    # moto's ECR token is deterministic: base64("AWS:<this>").
    ECR_PASSWORD = "123456789012-auth-token"

    def __init__(self, port: int | None = None, env: dict[str, str] | None = None):
        self.port = port or free_port()
        self.env = env or {}  # e.g. INITIAL_NO_AUTH_ACTION_COUNT: moto then checks credentials
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import tempfile

        # Its output in a file of its own: a server that did not come up says why.
        self.log = Path(tempfile.mkstemp(prefix=f"moto-{self.port}-", suffix=".log")[1])
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=log,
            )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"moto server on port {self.port} exited ({self.proc.returncode}): {self.output()}")
            try:
                return requests.get(f"{self.url}/moto-api/", timeout=1).status_code < 500
            except requests.RequestException:  # not listening yet, or too busy to answer in time
                return False

        try:
            wait_for(up, 30, "moto server")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {self.output()}") from None

    def output(self) -> str:
        """The end of what the server printed."""
        return self.log.read_text(errors="replace")[-2000:] if getattr(self, "log", None) else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.unlink(missing_ok=True)

    def conn_env(self, conn_id: str) -> dict[str, str]:
        conn = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"region_name": "us-east-1", "endpoint_url": self.url},
        }
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}


class ScratchEngine:
    """A Docker engine of the test's own, standing in for another host: its own data root,
    exec root, socket and pid file (the same flags provision.sh starts the first one with).
    Stopping it removes everything it held."""

    def __init__(self, name: str, socket: str | None = None, extra_args: tuple[str, ...] = ()):
        import tempfile

        # Short: containerd's socket lives under the exec root, and socket paths are short.
        self.root = Path(tempfile.mkdtemp(prefix=f"nci-{name}-", dir="/tmp"))
        self.socket = Path(socket) if socket else self.root / "docker.sock"
        self.extra_args = extra_args  # another listener, TLS
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def conn_env(self, conn_id: str) -> dict[str, str]:
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps({"conn_type": "docker", "host": self.url})}

    def client(self):
        import docker

        return docker.APIClient(base_url=self.url, timeout=300)

    def start(self) -> None:
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                "dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                "-H", self.url, "--pidfile", str(self.root / "docker.pid"), "--iptables=false", "--ip6tables=false",
                "--bridge=none", "--storage-driver=overlay2", *self.extra_args,
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )  # fmt: skip

        def up() -> bool:
            try:
                return bool(self.client().ping())
            except Exception:
                return False

        wait_for(up, 60, f"dockerd on {self.socket}")

    def load_from(self, source, *images: str) -> None:
        """Copy IMAGES from the SOURCE engine (docker save | docker load); each image once,
        its other names given here by tagging (the ID survives save and load)."""
        loaded: set[str] = set()
        for image in images:
            image_id = source.inspect_image(image)["Id"]
            if image_id not in loaded:
                self.client().load_image(b"".join(source.get_image(image)))
                loaded.add(image_id)
            repo, _, tag = image.rpartition(":")
            self.client().tag(image_id, repo, tag)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


def base_images(client) -> list[str]:
    """The names of the locally made base images (BASE_IMAGES) on CLIENT's engine."""
    return sorted(t for i in client.images() for t in i["RepoTags"] or [] if t.startswith(BASE_IMAGES))


class GitServer:
    """`git daemon` on loopback serving the repositories under ROOT read-only over git://,
    partial clone allowed (as GitHub allows it): a source no worker reaches through its disk."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["git", "-c", "uploadpack.allowFilter=true", "daemon", "--reuseaddr", "--export-all",
             "--listen=127.0.0.1", f"--port={self.port}", f"--base-path={self.root}", str(self.root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(up, 15, f"git daemon on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class GitHttpServer:
    """`git http-backend` behind an HTTP server on loopback that requires Basic auth (USER,
    TOKEN), as a private GitHub repository does over HTTPS, partial clone allowed. Every
    request it saw is kept (path, Authorization header, status) for tests to look at."""

    def __init__(self, root: Path, user: str, token: str):
        self.root, self.user, self.token = root, user, token
        self.requests: list[tuple[str, str, int]] = []
        self.server: Any = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def start(self) -> None:
        import base64
        import http.server
        import threading

        owner = self
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.token}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                given = self.headers.get("Authorization", "")
                if given != expected:
                    owner.requests.append((self.path, given, 401))
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "PATH": os.environ["PATH"],
                    "GIT_PROJECT_ROOT": str(owner.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": "uploadpack.allowFilter",
                    "GIT_CONFIG_VALUE_0": "true",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": owner.user,
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
                status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
                owner.requests.append((self.path, given, status))
                self.send_response(status)
                for k, v in headers:
                    if k.lower() != "status":
                        self.send_header(k, v.strip())
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


@contextlib.contextmanager
def stalled_server() -> Iterator[int]:
    """A port on loopback that accepts every connection and never answers, as a hung git
    daemon or proxy does; its number."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql: run scripts/provision.sh (apt: postgresql)")
    return Path(found[-1]).parent


class Postgres:
    """A throwaway cluster in its own folder; password auth on 127.0.0.1:PORT.

    PostgreSQL refuses to run as root, so under root the cluster belongs to Debian's
    `postgres` user (its folder lives outside pytest's root-only tmp dirs).
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="nightly-ci-pg-"))
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.user = "postgres" if os.getuid() == 0 else None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow:{self.password}@127.0.0.1:{self.port}/airflow"

    def _run(self, *cmd: str | Path) -> None:
        env = {**os.environ, "PGPASSWORD": self.password}
        proc = subprocess.run([str(c) for c in cmd], user=self.user, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{Path(str(cmd[0])).name} failed: {proc.stdout}{proc.stderr}")

    def start(self) -> None:
        bin_dir = _pg_bin()
        (self.root / "pwfile").write_text(self.password)
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.root / "pwfile"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        data = self.root / "data"
        self._run(bin_dir / "initdb", "-D", data, "-U", "airflow", "--pwfile", self.root / "pwfile",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8")  # fmt: skip
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                bin_dir / "postgres",
                "-D",
                data,
                "-p",
                str(self.port),
                "-k",
                self.root,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            user=self.user,
            stdout=log,
            stderr=log,
        )
        ready = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        wait_for(lambda: subprocess.run(ready).returncode == 0, 30, f"postgres on 127.0.0.1:{self.port}")
        self.createdb("airflow")

    def createdb(self, name: str) -> str:
        """A new database NAME; its URL (psycopg2, as Airflow's own)."""
        self._run(_pg_bin() / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", name)
        return self.createdb_url(name)

    def createdb_url(self, name: str) -> str:
        """The URL of database NAME on this server."""
        return self.url.removesuffix("/airflow") + f"/{name}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # smart shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)
