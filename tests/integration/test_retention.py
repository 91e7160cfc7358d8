"""The retention DAG for real: run tags expire from an authenticated registry by their
push time, moving tags and what they point at stay, superseded framework images go by
digest; only the run folders of this DAG and its culprit finder expire, by their marker,
and the culprit finder's candidate tags and images with the nightly's; this project's old
images leave the engines. Plus the registry's odd cases (M8) one by one."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import docker
import pytest

from include.nightly_ci.build.operators import BuiltImage
from include.nightly_ci.images.registries import RegistryAuth, RegistryClient
from include.nightly_ci.names import LABEL_CREATED, LABEL_LOGICAL_DATE, LABEL_RUN_ID, RUN_MARKER, tag_safe_run_id
from include.nightly_ci.plan import Registry, load_plan
from include.nightly_ci.records import PushResult, RunMarker
from include.nightly_ci.retention.expiry import TagRules
from include.nightly_ci.retention.facts import PushFacts
from include.nightly_ci.retention.registry import expire_registry
from tests.services import ENGINE, ROOT, MotoServer, ScratchEngine, airflow_env, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = "ai-dynamo/dynamo"
NOW = datetime.now(UTC)
BASE = "nightly-ci-base:bookworm-amd64"


def run_retention(config, env, dry_run: bool) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "dags",
            "test",
            "nightly_ci_retention",
            "-c",
            f'{{"dry_run": {str(dry_run).lower()}}}',
        ],
        env=airflow_env({"NIGHTLY_CI_CONFIG": str(config), **env}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    (config.parent / f"retention-{'dry' if dry_run else 'real'}.log").write_text(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
PLAN = load_plan(str(ROOT / "dev" / "local.yaml"))
RULES = TagRules.of(PLAN)
WEEK = timedelta(days=7)
NO_RECORDS = PushFacts({}, {})  # ages from the images' created labels


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(client: RegistryClient, data: bytes) -> str:
    digest = _sha(data)
    start = client.request("POST", f"{REPO}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    if location.startswith("/"):
        location = f"http://{client.auth.host}{location}"
    sep = "&" if "?" in location else "?"
    done = client.request(
        "PUT", "", {"Content-Type": "application/octet-stream"}, url=f"{location}{sep}digest={digest}", data=data
    )
    assert done.status_code == 201, done.text
    return digest


def put_manifest(client: RegistryClient, tag: str, body: dict, media_type: str = OCI_MANIFEST) -> str:
    data = json.dumps(body).encode()
    resp = client.request("PUT", f"{REPO}/manifests/{tag}", {"Content-Type": media_type}, data=data)
    assert resp.status_code == 201, resp.text
    return resp.headers["Docker-Content-Digest"]


def put_image(
    client: RegistryClient, tag: str, labels: dict[str, str] | None = None, config: bytes | None = None
) -> str:
    """A layerless image whose config holds LABELS (or the raw CONFIG bytes) as TAG; its digest."""
    if config is None:
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels or {}}}).encode()
    blob = put_blob(client, config)
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob, "size": len(config)},
        "layers": [],
    }
    return put_manifest(client, tag, body)


def labels_of(night: datetime, created: datetime, run_id: str = "r") -> dict[str, str]:
    return {LABEL_LOGICAL_DATE: night.isoformat(), LABEL_CREATED: created.isoformat(), LABEL_RUN_ID: run_id}


def run_folder(root, run_id: str, night: datetime, started: datetime, dag_id: str = PLAN.dag_id) -> str:
    """A run's folder as resolve_source (or the culprit finder's begin) starts it: its marker (and one artifact)."""
    folder = root / tag_safe_run_id(run_id)
    (folder / "vllm_amd64" / "build").mkdir(parents=True)
    marker = RunMarker(dag_id, run_id, run_id.split("__")[0], night.isoformat(), started.isoformat())
    (folder / RUN_MARKER).write_text(json.dumps(marker.to_json()))
    (folder / "vllm_amd64" / "build" / "metrics-runtime.json").write_text("{}")
    return folder.name


def push_record(root, run_id: str, image: str, registry: str, pushed: dict[str, str], at: datetime) -> None:
    """The record a push task leaves (PushResult.record_key), as publish.py writes it."""
    push = next(
        p
        for p in PLAN.cell("vllm", "amd64").framework_pushes + PLAN.cell("vllm", "amd64").runtime_pushes
        if p.image == image and p.registry == registry
    )
    record = PushResult(registry, "h", REPO, "id", pushed, {}, None, at.isoformat())
    (root / record.record_key(push.task, run_id)).write_text(json.dumps(record.to_json()))


CULPRIT_DAG = f"{PLAN.dag_id}_culprit"


def culprit_run(run_id: str, ran: datetime) -> dict:
    """What a task of the culprit run RUN_ID, triggered at RAN, sees of its run."""

    class Run:
        dag_id, run_type, logical_date = CULPRIT_DAG, "asset_triggered", None

    run = Run()
    run.run_id, run.run_after = run_id, ran  # type: ignore[attr-defined]
    return {"dag_run": run}


def candidate_build(commit: str, artifacts=None):
    """The culprit DAG's own build task for COMMIT (of the vllm amd64 cell), keeping its
    files under ARTIFACTS."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from include.nightly_ci.artifacts import ArtifactStore
    from include.nightly_ci.build.candidate import CandidateBuildOperator
    from include.nightly_ci.culprit_dag import build_culprit_dag

    mapped = build_culprit_dag(PLAN).task_dict["vllm_amd64.build"]
    assert isinstance(mapped, MappedOperator)
    op = CandidateBuildOperator(
        task_id=mapped.task_id, commit=commit, **{k: v for k, v in mapped.partial_kwargs.items() if k != "task_id"}
    )
    if artifacts is not None:
        op.store = ArtifactStore(str(artifacts))
    return op


def candidate(commit: str, run_id: str, ran: datetime) -> tuple[str, dict[str, str]]:
    """The tag and the labels the culprit run RUN_ID's build of COMMIT pushes its image with."""
    from include.nightly_ci.names import build_tag

    op = candidate_build(commit)
    src = op._source(culprit_run(run_id, ran))
    return build_tag(op.run_tag_pattern, op.framework, op.arch, run_id, op.image), op._labels(src)


def test_the_retention_dag(registries, airflow_home, tmp_path):
    """C1, H2, H3 and M8 through `airflow dags test nightly_ci_retention`."""
    ecr, acr = registries("ecr"), registries("acr")
    client, acr_client = ecr.client(), acr.client()
    old, backfill_night, started = NOW - timedelta(days=9), NOW - timedelta(days=10), NOW - timedelta(hours=3)
    old_run, backfill = "scheduled__old", "backfill__night-10-days-ago"
    moving = put_image(client, "nightly-vllm-amd64", labels_of(old, old, old_run))
    put_image(client, "nightly-vllm-amd64-run-shares-moving", labels_of(old, old, old_run))  # the same image
    old_tag, backfill_tag = "nightly-vllm-amd64-run-scheduled-old", "nightly-vllm-amd64-run-backfill-10"
    old_digest = put_image(client, old_tag, labels_of(old, old, "old image"))
    put_image(acr_client, old_tag, labels_of(old, old, "old image"))
    # A backfill of a night 10 days ago, pushed 3 hours ago: young (H2).
    backfill_digest = put_image(client, backfill_tag, labels_of(backfill_night, started, backfill))
    superseded = put_image(client, "main-vllm-framework-amd64", labels_of(old, old, "fw old"))
    put_image(client, "main-vllm-framework-amd64", labels_of(NOW, NOW, "fw now"))
    put_image(client, "someone-elses-app", {LABEL_CREATED: "2025-06-01 12:00:00 +0000 UTC"})  # M8
    # The culprit finder's: an old search, a young one, and an old one that rebuilt a commit today.
    old_search, young_search = "culprit__vllm_amd64.unit__scheduled__old__01", "culprit__vllm_amd64.unit__young__00"
    old_candidate, old_labels = candidate("a" * 40, old_search, old)
    young_candidate, young_labels = candidate("b" * 40, young_search, started)
    repushed, repushed_labels = candidate("c" * 40, old_search, old)
    put_image(client, old_candidate, old_labels)
    put_image(client, young_candidate, young_labels)
    repushed_digest = put_image(client, repushed, repushed_labels)
    moving_candidate, _ = candidate("d" * 40, old_search, old)
    put_image(client, moving_candidate, labels_of(old, old, old_run))  # the moving tag's image

    artifacts = tmp_path / "artifacts"
    old_folder = run_folder(artifacts, old_run, old, old)
    young = run_folder(artifacts, backfill, backfill_night, started)
    push_record(artifacts, old_run, "runtime", "ecr", {old_tag: old_digest, "nightly-vllm-amd64": moving}, old)
    push_record(artifacts, old_run, "framework", "ecr", {"main-vllm-framework-amd64": superseded}, old)
    push_record(artifacts, backfill, "runtime", "ecr", {backfill_tag: backfill_digest}, started)
    old_culprit = run_folder(artifacts, old_search, old, old, CULPRIT_DAG)
    young_culprit = run_folder(artifacts, young_search, started, started, CULPRIT_DAG)
    # The young search's build of the commit the old one had built: its push record (the
    # build's own) makes the tag young, whatever its image's created label says.
    repushed_build = candidate_build("c" * 40, artifacts)
    repushed_build._record_push(young_search, BuiltImage("ecr", ecr.host, REPO, repushed, repushed_digest, "i", "m"))
    assert list((artifacts / young_culprit).rglob("push_runtime_ecr.json"))
    not_ours = run_folder(artifacts, "culprit__theirs__01", old, old, "other_nightly_culprit")
    ledger = artifacts / "other-team" / "ledger.csv"  # H3: not ours, however old
    ledger.parent.mkdir()
    ledger.write_text("a,b\n")
    for path in [ledger, *(artifacts / young).rglob("*")]:
        os.utime(path, (0, 0))  # C1: a store without times says 1970

    engine = ScratchEngine("rt-dag")  # the builders' and runners' engine (not the shared one)
    engine.start()
    try:
        engine.load_from(docker.APIClient(base_url=ENGINE, timeout=300), BASE)

        def build(tag: str, labels: dict[str, str]) -> str:
            dockerfile = f"FROM {BASE}\n" + "".join(f'LABEL "{k}"="{v}"\n' for k, v in labels.items())
            out = engine.client().build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, decode=True)
            return next(c["aux"]["ID"] for c in out if "aux" in c)

        engine_image = build("nightly-ci/vllm-amd64:runtime", labels_of(old, old, old_run))
        # The candidates a culprit search built on the builder: labelled as the nightly's builds.
        old_engine_candidate = build(f"127.0.0.1:5000/{REPO}:{old_candidate}", old_labels)
        young_engine_candidate = build(f"127.0.0.1:5000/{REPO}:{young_candidate}", young_labels)
        config = write_config(
            tmp_path / "c.yaml",
            "registries:\n  ecr: {conn_id: rt_ecr}\n  acr: {conn_id: rt_acr}\n"
            f"artifacts: {{base: {artifacts}}}\n"
            "arches:\n  amd64: {builder: {conn_id: rt_engine}}\n  arm64: {builder: {conn_id: rt_engine}}\n"
            "pools:\n  cpu-arm-r8g-4xlarge: {runner: {conn_id: rt_engine}}\n  gpu-l40-amd64: {runner: {conn_id: rt_engine}}\n",
        )
        env = {
            **ecr.conn_env("rt_ecr"),
            **acr.conn_env("rt_acr", "azure_container_registry"),
            **engine.conn_env("rt_engine"),
        }
        before = set(ecr.tags(REPO))
        dry = run_retention(config, env, dry_run=True)
        assert f"would delete ecr/{REPO}:{old_tag}" in dry.stdout
        assert f"would delete ecr/{REPO}@{superseded}" in dry.stdout
        assert f"would delete file://{artifacts / old_folder}:" in dry.stdout
        assert f"would delete ecr/{REPO}:{old_candidate}" in dry.stdout
        assert f"would delete file://{artifacts / old_culprit}:" in dry.stdout
        assert dry.stdout.count(f"would remove engine 'rt_engine': {engine_image[:19]}") == 1  # one task for it
        assert f"would remove engine 'rt_engine': {old_engine_candidate[:19]}" in dry.stdout
        assert set(ecr.tags(REPO)) == before and (artifacts / old_folder).exists()
        assert (artifacts / old_culprit).exists()

        real = run_retention(config, env, dry_run=False)
        assert set(ecr.tags(REPO)) == before - {old_tag, old_candidate}
        assert f"keep ecr/{REPO}:{repushed} ({repushed_digest[:19]}): within 7 days (pushed " in real.stdout
        (young_line,) = [line for line in real.stdout.splitlines() if f"keep ecr/{REPO}:{young_candidate} " in line]
        assert "within 7 days (created label" in young_line  # no record: its created label, the run's time
        assert f"keep ecr/{REPO}:{moving_candidate}" in real.stdout
        assert not (artifacts / old_culprit).exists()
        assert (artifacts / young_culprit / RUN_MARKER).exists() and (artifacts / not_ours / RUN_MARKER).exists()
        assert acr.tags(REPO) == []
        assert client.digest(REPO, superseded) is None
        assert client.digest(REPO, "nightly-vllm-amd64-run-shares-moving") == moving
        assert f"keep ecr/{REPO}:{backfill_tag}" in real.stdout
        assert not (artifacts / old_folder).exists()
        assert ledger.exists() and (artifacts / young / "vllm_amd64" / "build" / "metrics-runtime.json").exists()
        left = {i["Id"] for i in engine.client().images()}
        assert engine_image not in left and old_engine_candidate not in left and young_engine_candidate in left
    finally:
        engine.stop()


def test_h2_a_backfilled_night_pushed_today_is_kept(registries, monkeypatch):
    """The audit's decide_tags example: at 12:00, a backfill of 11-18..11-20 that started
    at 08:00 has pushed its nights' run tags; they are hours old, whatever their night."""
    reg = registries("h2")
    for k, v in reg.conn_env("h2_reg").items():
        monkeypatch.setenv(k, v)
    client = reg.client()
    now = NOW
    started = now - timedelta(hours=4)
    backfill = {
        f"nightly-vllm-amd64-run-backfill-{night:%Y%m%d}T080000Z": night
        for night in (now - timedelta(days=11), now - timedelta(days=9))
    }
    for tag, night in backfill.items():
        put_image(client, tag, labels_of(night, started))
    last_week = now - timedelta(days=9)
    put_image(client, "nightly-vllm-amd64-run-scheduled-old", labels_of(last_week, last_week))
    registry = Registry("h2", "docker", "h2_reg", REPO)
    decisions = {d.tag: d for d in expire_registry(registry, RULES, NO_RECORDS, WEEK, now, False) if hasattr(d, "tag")}
    assert [t for t, d in decisions.items() if d.delete] == ["nightly-vllm-amd64-run-scheduled-old"]
    assert set(reg.tags(REPO)) == set(backfill)


def test_m8_odd_images_and_labels_do_not_stop_retention(registries, monkeypatch, caplog):
    """A foreign image with Go's time format in its created label, a config blob that is
    not JSON and an empty index: kept and logged; the expired run tag still goes."""
    reg = registries("m8")
    for k, v in reg.conn_env("m8_reg").items():
        monkeypatch.setenv(k, v)
    client = reg.client()
    old = NOW - timedelta(days=9)
    put_image(client, "someone-elses-app", {LABEL_CREATED: "2025-06-01 12:00:00 +0000 UTC"})
    put_image(client, "nightly-vllm-amd64-run-odd-config", config=b"\x00 not json")
    put_image(client, "nightly-vllm-amd64-run-odd-label", {LABEL_CREATED: "2025-06-01 12:00:00 +0000 UTC"})
    put_manifest(
        client,
        "nightly-vllm-amd64-run-empty-index",
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []},
        OCI_INDEX,
    )
    put_image(client, "nightly-vllm-amd64-run-scheduled-old", labels_of(old, old))
    registry = Registry("m8", "docker", "m8_reg", REPO)
    with caplog.at_level("INFO"):
        expired = expire_registry(registry, RULES, NO_RECORDS, WEEK, NOW, False)
    decisions = {d.tag: d for d in expired if hasattr(d, "tag")}
    assert [t for t, d in decisions.items() if d.delete] == ["nightly-vllm-amd64-run-scheduled-old"]
    assert "nightly-vllm-amd64-run-scheduled-old" not in reg.tags(REPO)
    assert len(reg.tags(REPO)) == 4
    assert "is not JSON" in decisions["nightly-vllm-amd64-run-odd-config"].reason
    assert "is an index without images" in decisions["nightly-vllm-amd64-run-empty-index"].reason
    assert "is not an ISO time" in decisions["nightly-vllm-amd64-run-odd-label"].reason
    assert "(not examined)" in decisions["someone-elses-app"].reason
    assert "keep m8/ai-dynamo/dynamo:nightly-vllm-amd64-run-odd-config" in caplog.text


class PagingRegistry:
    """A registry that pages tags/list as the distribution spec says (`n`, `last`, a Link
    header to the next page), as ECR, ACR and distribution 3 do: a pass-through proxy on
    loopback in front of a real registry, since Debian's distribution 2.8 returns every tag
    at once whatever `n` asks."""

    def __init__(self, upstream: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        import requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept")}
                resp = requests.get(f"http://{upstream}{url.path}", headers=headers, timeout=10)
                body, extra = resp.content, {}
                if url.path.endswith("/tags/list") and resp.status_code == 200:
                    query = parse_qs(url.query)
                    tags = sorted(resp.json()["tags"])
                    if "last" in query:
                        tags = [t for t in tags if t > query["last"][0]]
                    n = int(query.get("n", ["2"])[0])  # a small default page, as a registry may choose
                    if len(tags) > n:
                        extra["Link"] = f'<{url.path}?last={tags[n - 1]}&n={n}>; rel="next"'
                    body = json.dumps({"name": resp.json()["name"], "tags": tags[:n]}).encode()
                self.send_response(resp.status_code)
                for k, v in {
                    **{
                        k: v
                        for k, v in resp.headers.items()
                        if k.lower() in ("content-type", "www-authenticate", "docker-content-digest")
                    },
                    **extra,
                }.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_m8_tags_are_listed_page_by_page(registries):
    reg = registries("pages")
    client = reg.client()
    tags = {f"t{i:02d}" for i in range(7)}
    digest = put_image(client, "t00", {})
    body = client.manifest(REPO, digest)
    for tag in tags - {"t00"}:
        client.put_manifest(REPO, tag, body)
    paging = PagingRegistry(reg.host)
    try:
        paged = RegistryClient(RegistryAuth("p", "p", paging.host, reg.user, reg.password))
        first = paged.request("GET", f"{REPO}/tags/list", params={"n": 3})
        assert len(first.json()["tags"]) == 3 and "next" in first.links
        assert set(paged.tags(REPO, page_size=3)) == tags
        assert set(paged.tags(REPO)) == tags  # the registry's own page size (2 here)
    finally:
        paging.stop()


def test_m8_ecr_failures_in_the_answer_are_reported_and_the_rest_still_goes(monkeypatch):
    """batch_delete_image answers 200 with `failures` for what it did not delete: those are
    reported as not deleted (moto server speaks ECR's API)."""
    import boto3

    from include.nightly_ci.retention.registry import Victim, delete

    moto = MotoServer()
    moto.start()
    try:
        for k, v in moto.conn_env("rt_aws").items():
            monkeypatch.setenv(k, v)
        ecr = boto3.client(
            "ecr", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        ecr.create_repository(repositoryName=REPO)
        digests = {}
        for tag, config in (("nightly-vllm-amd64-run-a", "a"), ("nightly-vllm-amd64-run-b", "b")):
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": 2,
                    "digest": "sha256:" + config * 64,
                },
                "layers": [],
            }
            out = ecr.put_image(repositoryName=REPO, imageManifest=json.dumps(manifest), imageTag=tag)
            digests[tag] = out["image"]["imageId"]["imageDigest"]
        registry = Registry("ecr", "ecr", "rt_aws", REPO)
        victims = [
            Victim(
                f"ecr/{REPO}:nightly-vllm-amd64-run-a", "nightly-vllm-amd64-run-a", digests["nightly-vllm-amd64-run-a"]
            ),
            Victim(f"ecr/{REPO}:nightly-vllm-amd64-run-gone", "nightly-vllm-amd64-run-gone", "sha256:" + "9" * 64),
            Victim(f"ecr/{REPO}@sha256:{'8' * 64}", None, "sha256:" + "8" * 64),
        ]
        refused = delete(registry, None, victims)  # ECR's API needs no registry client
        assert set(refused) == {victims[1].what, victims[2].what}
        assert all("ImageNotFound" in why for why in refused.values()), refused
        left = [t for d in ecr.describe_images(repositoryName=REPO)["imageDetails"] for t in d.get("imageTags", [])]
        assert left == ["nightly-vllm-amd64-run-b"]
    finally:
        moto.stop()


def test_m8_a_refused_delete_fails_the_task_after_trying_the_rest(tmp_path, provisioned, monkeypatch, caplog):
    """A registry that refuses deletes (405, as distribution does with deletes off): every
    expired tag is tried and logged as not deleted, then the task fails."""
    from include.nightly_ci.errors import RegistryError
    from tests.services import LocalRegistry

    reg = LocalRegistry(tmp_path / "no-delete")
    config = reg.root / "config.yml"
    config.write_text(config.read_text().replace("delete: {enabled: true}", "delete: {enabled: false}"))
    reg.start()
    try:
        for k, v in reg.conn_env("nd_reg").items():
            monkeypatch.setenv(k, v)
        old = NOW - timedelta(days=9)
        for tag in ("nightly-vllm-amd64-run-one", "nightly-vllm-amd64-run-two"):
            put_image(reg.client(), tag, labels_of(old, old, tag))
        with caplog.at_level("INFO"), pytest.raises(RegistryError, match="refused 2 deletion"):
            expire_registry(Registry("nd", "docker", "nd_reg", REPO), RULES, NO_RECORDS, WEEK, NOW, False)
        assert caplog.text.count("NOT deleted") == 2
        assert len(reg.tags(REPO)) == 2
    finally:
        reg.stop()


def test_m8_a_superseded_framework_image_goes_by_digest(registries, monkeypatch):
    """The framework push records name the digests the moving tag held; once it holds
    another and the last push is older than the keep days, the old image goes."""
    reg = registries("fw")
    for k, v in reg.conn_env("fw_reg").items():
        monkeypatch.setenv(k, v)
    client = reg.client()
    old = NOW - timedelta(days=9)
    superseded = put_image(client, "main-vllm-framework-amd64", labels_of(old, old, "old"))
    still_young = put_image(client, "main-vllm-framework-amd64", labels_of(NOW, NOW - timedelta(days=2), "young"))
    current = put_image(client, "main-vllm-framework-amd64", labels_of(NOW, NOW, "now"))
    pushed = PushFacts({}, {superseded: old, still_young: NOW - timedelta(days=2), current: NOW})
    registry = Registry("fw", "docker", "fw_reg", REPO)
    dry = expire_registry(registry, RULES, pushed, WEEK, NOW, True)
    assert [d.digest for d in dry if d.delete] == [superseded] and client.digest(REPO, superseded)
    expire_registry(registry, RULES, pushed, WEEK, NOW, False)
    assert client.digest(REPO, superseded) is None
    assert client.digest(REPO, still_young) == still_young and client.digest(REPO, current) == current
    again = expire_registry(registry, RULES, pushed, WEEK, NOW, False)  # the record stays; the image is gone
    assert not any(d.delete for d in again)


def test_m8_engines_lose_this_projects_old_images_and_nothing_else(provisioned, monkeypatch, caplog):
    """A builder engine of its own: this project's images (run-id label) built more than the
    keep days ago go, by name and by id; a recent one, one a container still uses, and any
    image without the project's label (however old) stay."""
    from include.nightly_ci.errors import EngineUnavailable
    from include.nightly_ci.retention.engines import prune_engines
    from tests.services import ScratchEngine

    base = "nightly-ci-base:bookworm-amd64"
    engine = ScratchEngine("prune")
    engine.start()
    try:
        engine.load_from(docker.APIClient(base_url=ENGINE, timeout=300), base)
        client = engine.client()
        old, recent = NOW - timedelta(days=9), NOW - timedelta(days=1)

        def build(tag: str, labels: dict[str, str]) -> str:
            lines = "".join(f'LABEL "{k}"="{v}"\n' for k, v in labels.items())
            out = client.build(fileobj=io.BytesIO(f"FROM {base}\n{lines}".encode()), tag=tag, rm=True, decode=True)
            return next(c["aux"]["ID"] for c in out if "aux" in c)

        gone = build("nightly-ci/vllm-amd64:runtime", labels_of(old, old, "scheduled__old"))
        client.tag(gone, "127.0.0.1:5000/ai-dynamo/dynamo", "nightly-vllm-amd64-run-scheduled-old")
        kept = build("nightly-ci/vllm-amd64:framework", labels_of(recent, recent, "scheduled__recent"))
        in_use = build("nightly-ci/sglang-amd64:runtime", labels_of(old, old, "scheduled__busy"))
        client.create_container(
            in_use, ["true"], name="a-suite", host_config=client.create_host_config(network_mode="none")
        )
        foreign = build("another-project/app:1", {LABEL_CREATED: old.isoformat()})
        for k, v in engine.conn_env("rt_builder").items():
            monkeypatch.setenv(k, v)
        assert prune_engines(("rt_builder",), WEEK, NOW, True) == [gone]  # dry run: logged only
        assert client.inspect_image(gone)
        with caplog.at_level("INFO"):
            assert prune_engines(("rt_builder",), WEEK, NOW, False) == [gone]
        images = {i["Id"] for i in client.images()}
        assert gone not in images and {kept, in_use, foreign} <= images
        assert client.inspect_image(base) and "a container uses it" in caplog.text
        monkeypatch.setenv(
            "AIRFLOW_CONN_RT_NOWHERE", json.dumps({"conn_type": "docker", "host": "unix:///nonexistent.sock"})
        )
        with pytest.raises(EngineUnavailable, match="rt_nowhere"):
            prune_engines(("rt_nowhere", "rt_builder"), WEEK, NOW, False)  # the rest still pruned, then the error
    finally:
        engine.stop()
