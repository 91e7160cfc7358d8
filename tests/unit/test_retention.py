"""Retention picks exactly what is older than the cutoff, and never a moving tag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from include.nightly_ci.plan import load_plan
from include.nightly_ci.retention.expiry import (
    TagFacts,
    TagRules,
    decide_framework_digests,
    decide_tags,
    expired,
    run_tag_regex,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
WEEK = timedelta(days=7)


def test_expired_is_strictly_older_than_the_cutoff():
    cutoff = NOW - WEEK
    items = [
        ("just-older", cutoff - timedelta(seconds=1)),
        ("at-cutoff", cutoff),
        ("newer", cutoff + timedelta(seconds=1)),
        ("ancient", NOW - timedelta(days=300)),
    ]
    assert expired(items, NOW, WEEK) == ["ancient", "just-older"]


def test_run_tags_are_recognised_and_nothing_else():
    runs = run_tag_regex(load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml")))
    assert runs.fullmatch("nightly-vllm-amd64-run-scheduled-20261120T080000Z")
    assert runs.fullmatch("nightly-trtllm-arm64-run-manual-x-1a2b3c4d")
    # What a build pushed for its push tasks: run-scoped, it goes with the run's tags.
    from include.nightly_ci.names import build_tag

    assert runs.fullmatch(build_tag("nightly-{framework}-{arch}-run-{run_id}", "vllm", "amd64", "r1", "framework"))
    for tag in (
        "nightly-vllm-amd64",
        "main-vllm-framework-amd64",
        "nightly-tensorflow-amd64-run-x",
        "latest",
        "vllm-amd64-cache",  # the registry cache where a builder exports one: kept
    ):
        assert not runs.fullmatch(tag)


def test_decisions():
    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    old, new = NOW - timedelta(days=10), NOW - timedelta(days=1)
    tags = {
        "nightly-vllm-amd64": TagFacts("sha256:shared"),  # moving, and still on an old image
        "main-vllm-framework-amd64": TagFacts("sha256:fw"),
        "nightly-vllm-amd64-run-a": TagFacts("sha256:shared", old, "pushed"),  # expired, the moving tag holds it
        "nightly-vllm-amd64-run-b": TagFacts("sha256:b", old, "pushed"),  # expired: goes
        "nightly-vllm-amd64-run-c": TagFacts("sha256:c", new, "pushed"),  # recent
        "nightly-vllm-amd64-run-d": TagFacts("sha256:d", None, "no created label"),  # no age: left alone
        "someone-elses-tag": TagFacts("sha256:e"),
    }
    decisions = {d.tag: d for d in decide_tags(TagRules.of(plan), tags, NOW, WEEK)}
    assert [t for t, d in decisions.items() if d.delete] == ["nightly-vllm-amd64-run-b"]
    assert decisions["nightly-vllm-amd64"].reason == "a moving tag"
    assert decisions["main-vllm-framework-amd64"].reason == "a moving tag"
    assert "same image" in decisions["nightly-vllm-amd64-run-a"].reason
    assert decisions["nightly-vllm-amd64-run-c"].reason.startswith("within 7 days (pushed ")
    assert decisions["nightly-vllm-amd64-run-d"].reason == "no age known: no created label"
    assert decisions["someone-elses-tag"].reason == "not a run tag of this config (not examined)"


def test_h2_the_audits_backfill_is_kept_by_push_time():
    """At 12:00 a backfill of 11-18..11-20 that started at 08:00 has pushed its run tags:
    aged by the push (four hours ago), not by the night (ten days ago), they stay."""
    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    pushed = NOW - timedelta(hours=4)
    tags = {
        "nightly-vllm-amd64": TagFacts("sha256:moving"),
        "nightly-vllm-amd64-run-backfill-20261118T080000Z": TagFacts("sha256:18", pushed, "pushed"),
        "nightly-vllm-amd64-run-backfill-20261120T080000Z": TagFacts("sha256:20", pushed, "pushed"),
        "nightly-vllm-amd64-run-scheduled-20261129T080000Z": TagFacts("sha256:29", NOW - timedelta(hours=28), "pushed"),
        "nightly-vllm-amd64-run-scheduled-20261119T080000Z": TagFacts("sha256:19", NOW - timedelta(days=9), "pushed"),
    }
    decisions = decide_tags(TagRules.of(plan), tags, NOW, WEEK)
    assert [d.tag for d in decisions if d.delete] == ["nightly-vllm-amd64-run-scheduled-20261119T080000Z"]


def test_an_unreadable_tag_stops_deletion_by_digest_only():
    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    old = NOW - timedelta(days=10)
    tags = {"nightly-vllm-amd64-run-b": TagFacts("sha256:b", old, "pushed"), "odd": TagFacts("", None, "HEAD 400")}
    by_digest = decide_tags(TagRules.of(plan), tags, NOW, WEEK)
    assert not any(d.delete for d in by_digest) and "could not be read" in by_digest[0].reason
    untag = decide_tags(TagRules.of(plan), tags, NOW, WEEK, by_digest=False)  # ECR: by tag
    assert [d.tag for d in untag if d.delete] == ["nightly-vllm-amd64-run-b"]


def test_superseded_framework_images_go_by_push_time_when_no_tag_holds_them():
    old, recent = NOW - timedelta(days=10), NOW - timedelta(days=2)
    pushed = {"sha256:held": old, "sha256:gone": old, "sha256:recent": recent}
    held = {"sha256:held": "main-vllm-framework-amd64"}
    decisions = {d.digest: d for d in decide_framework_digests(pushed, held, NOW, WEEK)}
    assert [d for d, x in decisions.items() if x.delete] == ["sha256:gone"]
    assert "still holds it" in decisions["sha256:held"].reason
    assert "within 7 days" in decisions["sha256:recent"].reason
    blocked = decide_framework_digests(pushed, held, NOW, WEEK, unreadable=["odd"])
    assert not any(d.delete for d in blocked)


# --- C1 / H3: artifacts age by the run's marker, and only run folders of this DAG go ---

import json  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from include.nightly_ci.artifacts import ArtifactStore  # noqa: E402
from include.nightly_ci.names import RUN_MARKER, tag_safe_run_id  # noqa: E402
from include.nightly_ci.records import RunMarker  # noqa: E402
from include.nightly_ci.retention.files import expire_artifacts  # noqa: E402

DAG_ID = "nightly_ci"


def mark_run(root, run_id: str, night: datetime, started: datetime, dag_id: str = DAG_ID) -> str:
    """A run's folder as resolve_source leaves it (its marker), with one artifact; the folder's name."""
    folder = tag_safe_run_id(run_id)
    marker = RunMarker(
        DAG_ID if dag_id is None else dag_id, run_id, "scheduled", night.isoformat(), started.isoformat()
    )
    (root / folder / "vllm_amd64" / "build").mkdir(parents=True, exist_ok=True)
    (root / folder / RUN_MARKER).write_text(json.dumps(marker.to_json()))
    (root / folder / "vllm_amd64" / "build" / "metrics-runtime.json").write_text("{}")
    return folder


@pytest.fixture
def memory_store():
    """An object store whose listings carry no modification time (as adlfs's `abfs://`
    reports `last_modified`, which Airflow's stat does not read): fsspec's memory store."""
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem  # type: ignore[import-untyped]

    fs = MemoryFileSystem()
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]
    attach("memory", fs=fs)
    store = ArtifactStore("memory://ci/nightly")
    yield store
    fs.store.clear()


def files(root) -> set[str]:
    return {str(p.relative_to(root)) if hasattr(p, "relative_to") else str(p) for p in root.rglob("*") if p.is_file()}


def test_c1_a_store_without_mtime_keeps_tonights_artifacts(memory_store):
    root = memory_store.root()
    tonight = mark_run(root, "scheduled__2026-11-28T08:00:00+00:00", NOW - timedelta(hours=4), NOW - timedelta(hours=4))
    artifact = root / tonight / "vllm_amd64" / "build" / "metrics-runtime.json"
    assert artifact.stat().st_mtime == 0  # what retention used to age it by: 1970
    expire_artifacts(memory_store, (DAG_ID,), WEEK, NOW, False)
    assert artifact.exists() and (root / tonight / RUN_MARKER).exists()


def test_c1_local_files_age_by_the_marker_not_their_mtime(tmp_path):
    store = ArtifactStore(str(tmp_path))
    recent = mark_run(
        tmp_path, "scheduled__2026-11-27T08:00:00+00:00", NOW - timedelta(days=1), NOW - timedelta(days=1)
    )
    old = mark_run(tmp_path, "scheduled__2026-11-10T08:00:00+00:00", NOW - timedelta(days=18), NOW - timedelta(days=18))
    for path in tmp_path.rglob("*"):  # a copy, a restore or a store that lies: every mtime 1970
        os.utime(path, (0, 0))
    new_file = tmp_path / old / "vllm_amd64" / "build" / "metrics-runtime.json"
    os.utime(new_file, None)  # and one file of the old run touched just now: it goes with its run
    expire_artifacts(store, (DAG_ID,), WEEK, NOW, False)
    assert (tmp_path / recent / "vllm_amd64" / "build" / "metrics-runtime.json").exists()
    assert not (tmp_path / old).exists()


def test_a_run_dated_in_the_future_is_aged_by_when_it_ran_not_kept_for_years(tmp_path):
    """A REST trigger with logical_date 2030 ran ten days ago: its files go with the others."""
    store = ArtifactStore(str(tmp_path))
    future = mark_run(
        tmp_path, "manual__2030-01-01T00:00:00+00:00", datetime(2030, 1, 1, tzinfo=UTC), NOW - timedelta(days=10)
    )
    expire_artifacts(store, (DAG_ID,), WEEK, NOW, False)
    assert not (tmp_path / future).exists()


def test_h3_only_marked_run_folders_of_this_dag_are_touched(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ancient = NOW - timedelta(days=40)
    ours = mark_run(tmp_path, "scheduled__2026-10-19T08:00:00+00:00", ancient, ancient)
    theirs = mark_run(tmp_path, "scheduled__2026-10-18T08:00:00+00:00", ancient, ancient, dag_id="other_nightly")
    ledger = tmp_path / "other-team" / "ledger.csv"
    ledger.parent.mkdir()
    ledger.write_text("a,b\n")
    loose = tmp_path / "notes.txt"
    loose.write_text("x")
    unmarked = tmp_path / "scheduled-20261001T080000Z" / "vllm_amd64" / "build" / "metrics-runtime.json"
    unmarked.parent.mkdir(parents=True)
    unmarked.write_text("{}")
    os.utime(ledger, (0, 0))
    thirty_days = (NOW - timedelta(days=30)).timestamp()
    for path in (loose, unmarked):
        os.utime(path, (thirty_days, thirty_days))
    expire_artifacts(store, (DAG_ID,), WEEK, NOW, False)
    assert ledger.exists() and loose.exists() and unmarked.exists()
    assert not (tmp_path / ours).exists()
    assert (tmp_path / theirs / RUN_MARKER).exists()


def write_push(root, run_id: str, plan, image: str, registry: str, pushed: dict[str, str], at: datetime) -> None:
    """A push task's record, where the push task writes it (PushResult.record_key)."""
    from include.nightly_ci.records import PushResult

    cell = plan.cell("vllm", "amd64")
    push = next(
        p for p in (*cell.framework_pushes, *cell.runtime_pushes) if p.image == image and p.registry == registry
    )
    record = PushResult(registry, "h", plan.registries[registry].repository, "id", pushed, {}, None, at.isoformat())
    path = root / record.record_key(push.task, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_json()))


def test_push_records_give_run_tags_and_framework_digests_their_push_time(memory_store):
    from include.nightly_ci.retention.facts import push_facts, run_folders

    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    root = memory_store.root()
    run = "backfill__2026-11-18T08:00:00+00:00"
    mark_run(root, run, NOW - timedelta(days=10), NOW - timedelta(hours=4))
    early, late = NOW - timedelta(hours=4), NOW - timedelta(hours=1)
    write_push(root, run, plan, "runtime", "ecr", {"nightly-vllm-amd64-run-x": "sha256:r"}, early)
    write_push(root, run, plan, "runtime", "acr", {"nightly-vllm-amd64-run-x": "sha256:r"}, late)  # other registry
    write_push(root, run, plan, "framework", "ecr", {"main-vllm-framework-amd64": "sha256:f"}, early)
    (root / tag_safe_run_id(run) / "vllm_amd64" / "build" / "push_runtime_bad.json").write_text("{not json")
    runs = run_folders(root, (DAG_ID,))
    facts = push_facts(runs, "ecr", "ai-dynamo/dynamo")
    assert facts.run_tags == {"nightly-vllm-amd64-run-x": early}
    assert facts.framework_digests == {"sha256:f": early}
    assert push_facts(runs, "acr", "ai-dynamo/dynamo").run_tags == {"nightly-vllm-amd64-run-x": late}
    assert runs[0].age_from == NOW - timedelta(hours=4)  # a backfilled night is as young as its run


def test_an_expired_run_goes_whole_marker_last_and_dry_run_deletes_nothing(memory_store):
    root = memory_store.root()
    old = mark_run(root, "scheduled__2026-11-10T08:00:00+00:00", NOW - timedelta(days=18), NOW - timedelta(days=18))
    (root / old / "results.json").write_text("{}")
    before = sorted(str(p) for p in root.rglob("*") if p.is_file())
    assert expire_artifacts(memory_store, (DAG_ID,), WEEK, NOW, True) == [str(root / old)]
    assert sorted(str(p) for p in root.rglob("*") if p.is_file()) == before
    expire_artifacts(memory_store, (DAG_ID,), WEEK, NOW, False)
    assert not [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "marker, why",
    [
        ("{not json", "unreadable"),
        (json.dumps({"dag_id": DAG_ID}), "unreadable"),  # fields missing
        (json.dumps(RunMarker(DAG_ID, "manual__x", "manual", "2026-01-01T00:00:00", "x").to_json()), "unreadable"),
        (
            json.dumps(
                RunMarker(
                    DAG_ID, "another-run", "manual", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"
                ).to_json()
            ),
            "whose folder would be",
        ),
    ],
)
def test_a_folder_whose_marker_is_not_its_own_is_left_alone(tmp_path, marker, why, caplog):
    folder = tmp_path / "scheduled-20260101T000000Z"
    folder.mkdir()
    (folder / RUN_MARKER).write_text(marker)
    (folder / "results.json").write_text("{}")
    with caplog.at_level("INFO"):
        assert expire_artifacts(ArtifactStore(str(tmp_path)), (DAG_ID,), WEEK, NOW, False) == []
    assert (folder / "results.json").exists() and why in caplog.text


@pytest.mark.parametrize(
    "base", ["/", "file:///", "s3://shared-company-bucket", "s3://shared-company-bucket/", "abfs://ci"]
)
def test_check_refuses_a_store_root_as_the_artifact_base(tmp_path, base):
    from include.nightly_ci.config import ConfigError, load_config

    single = "true" if "://" not in base or base.startswith("file") else "false"
    f = tmp_path / "c.yaml"
    f.write_text(
        f"extends: {ROOT / 'include' / 'config' / 'nightly_ci.yaml'}\n"
        f"artifacts: {{base: '{base}', conn_id: aws_default, single_host: {single}}}\n"
    )
    with pytest.raises(ConfigError, match="is the root of") as info:
        load_config(f)
    assert {x.path for x in info.value.findings} == {"artifacts.base"}
    f.write_text(f.read_text().replace(f"base: '{base}'", f"base: '{base.rstrip('/')}/nightly'"))
    load_config(f)


# --- The culprit finder's runs: marked like the nightly's, and expired with them ---

from include.nightly_ci.retention.expiry import run_dag_ids  # noqa: E402

CULPRIT_DAG_ID = f"{DAG_ID}_culprit"
CULPRIT_RUN = "culprit__vllm_amd64.unit__scheduled__2026-11-21T08:00:00+00:00__01"
COMMIT = "0123456789abcdef" * 2 + "01234567"


def shipped_plan():
    return load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))


def culprit_context(run_id: str, conf: dict, run_after: datetime = NOW, logical_date: datetime | None = None) -> dict:
    """What a culprit run's task sees: its run (asset-triggered runs have no logical date)."""
    from airflow.utils.types import DagRunType

    class Ti:
        def xcom_push(self, key: str, value: object) -> None:
            pass

    class Run:
        dag_id = CULPRIT_DAG_ID
        run_type = DagRunType.ASSET_TRIGGERED

    run = Run()
    run.run_id, run.conf, run.run_after, run.logical_date = run_id, conf, run_after, logical_date  # type: ignore[attr-defined]
    return {"ti": Ti(), "dag_run": run, "params": {}, "triggering_asset_events": {}}


def test_the_retention_dag_expires_the_runs_of_the_nightly_and_its_culprit_finder_only():
    from include.nightly_ci.retention.dag import build_retention_dag
    from include.nightly_ci.retention.operators import ExpireArtifactsOperator, ExpireRunTagsOperator

    plan = shipped_plan()
    assert run_dag_ids(plan) == (DAG_ID, CULPRIT_DAG_ID)
    dag = build_retention_dag(plan)
    artifacts = dag.task_dict["expire_artifacts"]
    assert isinstance(artifacts, ExpireArtifactsOperator) and artifacts.dag_ids == (DAG_ID, CULPRIT_DAG_ID)
    for reg in plan.registries.values():  # their push records are in the runs of both
        tags = dag.task_dict[plan.retention_tasks[reg.name].task_id]
        assert isinstance(tags, ExpireRunTagsOperator) and tags.dag_ids == (DAG_ID, CULPRIT_DAG_ID)


def test_a_culprit_run_marks_its_folder_first_of_all(tmp_path):
    """The culprit DAG's first task writes the run's marker before anything else, even when
    it then fails; retention reads it as a run of the culprit DAG, aged by when it ran."""
    from include.nightly_ci.culprit.operators import BeginSearchOperator
    from include.nightly_ci.culprit_dag import build_culprit_dag
    from include.nightly_ci.errors import CulpritError
    from include.nightly_ci.retention.facts import run_folders

    plan = shipped_plan()
    first = build_culprit_dag(plan).task_dict["begin"]
    assert isinstance(first, BeginSearchOperator) and first.store == plan.store
    store = ArtifactStore(str(tmp_path))
    finding = {"cell": "vllm_amd64", "suite": "unit", "nightly_run_id": "scheduled__x", "tests": ["t"]}
    conf = {"state": {}, "finding": finding, "step": 1}

    def begin(history: str | None) -> BeginSearchOperator:
        return BeginSearchOperator(
            task_id="begin",
            store=store,
            nightly_dag_id=DAG_ID,
            suites={"vllm_amd64": ["unit"]},
            history_conn_id=history,
        )

    failing = "culprit__vllm_amd64.unit__scheduled__2026-11-20T08:00:00+00:00__00"
    with pytest.raises(CulpritError, match=r"history\.conn_id is null"):
        begin(None).execute(culprit_context(failing, conf))
    assert (tmp_path / tag_safe_run_id(failing) / RUN_MARKER).exists()

    assert begin("history").execute(culprit_context(CULPRIT_RUN, conf, run_after=NOW - timedelta(hours=1))) == []
    marker = json.loads((tmp_path / tag_safe_run_id(CULPRIT_RUN) / RUN_MARKER).read_text())
    assert marker["dag_id"] == CULPRIT_DAG_ID and marker["run_id"] == CULPRIT_RUN
    assert marker["run_type"] == "asset_triggered" and marker["night"] == (NOW - timedelta(hours=1)).isoformat()
    started = datetime.fromisoformat(marker["started"])
    assert abs(started - datetime.now(UTC)) < timedelta(minutes=1)
    runs = {r.name: r for r in run_folders(store.root(), run_dag_ids(plan))}
    assert runs[tag_safe_run_id(CULPRIT_RUN)].age_from == started
    assert run_folders(store.root(), (DAG_ID,))[0].marker is None  # a nightly alone would not touch it


def test_the_culprit_dags_run_folders_expire_like_the_nightlys_and_no_other(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ancient, young = NOW - timedelta(days=40), NOW - timedelta(days=1)
    nightly = mark_run(tmp_path, "scheduled__2026-10-19T08:00:00+00:00", ancient, ancient)
    culprit = mark_run(tmp_path, CULPRIT_RUN, ancient, ancient, dag_id=CULPRIT_DAG_ID)
    candidate = tmp_path / culprit / "vllm_amd64" / "culprit" / COMMIT[:12] / "1" / "junit.xml"
    candidate.parent.mkdir(parents=True)
    candidate.write_text("<testsuite/>")
    recent = mark_run(tmp_path, CULPRIT_RUN.replace("__01", "__02"), young, young, dag_id=CULPRIT_DAG_ID)
    strangers = [
        mark_run(tmp_path, f"{run}__2026-10-1{i}T08:00:00+00:00", ancient, ancient, dag_id=dag_id)
        for i, (run, dag_id) in enumerate(
            [("a", "other_culprit"), ("b", f"{CULPRIT_DAG_ID}_x"), ("c", "culprit"), ("d", f"x{CULPRIT_DAG_ID}")]
        )
    ]
    unmarked = tmp_path / tag_safe_run_id(CULPRIT_RUN.replace("__01", "__03")) / "vllm_amd64" / "culprit" / "x.log"
    unmarked.parent.mkdir(parents=True)
    unmarked.write_text("x")
    gone = expire_artifacts(store, run_dag_ids(shipped_plan()), WEEK, NOW, False)
    assert sorted(gone) == sorted(str(store.root() / f) for f in (nightly, culprit))
    assert not (tmp_path / culprit).exists() and not (tmp_path / nightly).exists()
    assert (tmp_path / recent / RUN_MARKER).exists() and unmarked.exists()
    assert all((tmp_path / s / RUN_MARKER).exists() for s in strangers)


def candidate_build(commit: str = COMMIT, plan=None):
    """The culprit DAG's own build task for COMMIT, as its mapped instance is made."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from include.nightly_ci.build.candidate import CandidateBuildOperator
    from include.nightly_ci.culprit_dag import build_culprit_dag

    mapped = build_culprit_dag(plan or shipped_plan()).task_dict["vllm_amd64.build"]
    assert isinstance(mapped, MappedOperator)
    kwargs = {k: v for k, v in mapped.partial_kwargs.items() if k != "task_id"}
    return CandidateBuildOperator(task_id=mapped.task_id, commit=commit, **kwargs)


def candidate_tag(commit: str = COMMIT) -> str:
    """The tag a candidate's build pushes (the build's own naming)."""
    from include.nightly_ci.names import build_tag

    op = candidate_build(commit)
    return build_tag(op.run_tag_pattern, op.framework, op.arch, CULPRIT_RUN, op.image)


def test_candidate_tags_are_expired_by_age_and_nothing_like_them():
    rules = TagRules.of(shipped_plan())
    tag = candidate_tag()
    assert tag == f"culprit-vllm-amd64-{COMMIT[:12]}-build-runtime"
    assert rules.is_run_tag(tag) and rules.is_run_tag(f"culprit-trtllm-arm64-{'f' * 12}-build-runtime")
    for other in (
        f"culprit-vllm-amd64-{COMMIT[:12]}",  # never pushed without the build's suffix
        f"culprit-vllm-amd64-{COMMIT[:12]}-build-framework",
        f"culprit-tensorflow-amd64-{COMMIT[:12]}-build-runtime",  # not a cell of this config
        "culprit-vllm-amd64-not-a-commit-build-runtime",
        f"culprit-vllm-amd64-{COMMIT[:12].upper()}-build-runtime",
        f"x-culprit-vllm-amd64-{COMMIT[:12]}-build-runtime",
    ):
        assert not rules.is_run_tag(other), other
    old, new = NOW - timedelta(days=10), NOW - timedelta(days=1)
    tags = {
        "nightly-vllm-amd64": TagFacts("sha256:moving"),
        candidate_tag(): TagFacts("sha256:old", old, "created label"),
        candidate_tag("a" * 40): TagFacts("sha256:new", new, "pushed"),
        candidate_tag("b" * 40): TagFacts("sha256:moving", old, "created label"),  # the moving tag holds it
        "nightly-vllm-amd64-run-scheduled-20261127T080000Z": TagFacts("sha256:run", new, "pushed"),
        f"culprit-vllm-amd64-{COMMIT[:12]}": TagFacts("sha256:old2", old, "created label"),
    }
    decisions = {d.tag: d for d in decide_tags(rules, tags, NOW, WEEK)}
    assert [t for t, d in decisions.items() if d.delete] == [candidate_tag()]
    assert "same image" in decisions[candidate_tag("b" * 40)].reason


def test_a_candidate_build_leaves_a_push_record_that_ages_its_tag(memory_store):
    """The candidate build's record beside its build files: its tag's push time, read by
    retention from the culprit run's folder as the nightly's push records are."""
    from include.nightly_ci.build.operators import BuiltImage
    from include.nightly_ci.retention.facts import push_facts, run_folders

    plan = shipped_plan()
    op = candidate_build(plan=plan)
    op.store = memory_store
    root = memory_store.root()
    mark_run(root, CULPRIT_RUN, NOW - timedelta(days=20), NOW - timedelta(days=20), dag_id=CULPRIT_DAG_ID)
    reg = plan.registries[plan.cell("vllm", "amd64").cache_registry]
    built = BuiltImage(reg.name, "h", reg.repository, candidate_tag(), "sha256:c", "sha256:i", "m.json")
    before = datetime.now(UTC)
    op._record_push(CULPRIT_RUN, built)
    facts = push_facts(run_folders(root, run_dag_ids(plan)), reg.name, reg.repository)
    assert set(facts.run_tags) == {candidate_tag()} and facts.framework_digests == {}
    assert before <= facts.run_tags[candidate_tag()] <= datetime.now(UTC)
    assert push_facts(run_folders(root, (DAG_ID,)), reg.name, reg.repository).run_tags == {}
