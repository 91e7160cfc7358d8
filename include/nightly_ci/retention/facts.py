"""What retention ages things by: the facts runs wrote into the artifact store.

A run's folder (BASE/RUN/) starts with its marker (records.RunMarker): which DAG and run it
is, its night and when it really ran; the nightly's and its culprit finder's runs write one.
A push task leaves a PushResult next to the cell's build files (a culprit candidate's build
next to the candidate's): which tags it wrote, with which digest, and when. Store metadata
(mtime, LastModified) is never read: some stores lack it (abfs: every file looked 1970,
C1), and a copy or restore rewrites it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from include.nightly_ci.names import FRAMEWORK, RUN_MARKER, tag_safe_run_id
from include.nightly_ci.plan.culprit import CULPRIT_GROUP
from include.nightly_ci.records import PushResult, RunMarker

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

# Where a push task leaves its record: RUN/CELL/build/push_{image}_{registry}.json (the
# push TaskSpec's artifact_dir and local_id, plan/expand.py); a culprit candidate's build
# RUN/CELL/culprit/COMMIT12/push_runtime_{registry}.json (build/candidate.py).
PUSH_RECORDS = ("*/build/push_*.json", f"*/{CULPRIT_GROUP}/*/push_*.json")


def aware(stamp: str) -> datetime:
    """An ISO time; one without a zone is taken as UTC (the project writes UTC)."""
    when = datetime.fromisoformat(stamp)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunFolder:
    """A folder right under the artifact base, and whether it is a run of a DAG retention expires."""

    path: ObjectStoragePath
    marker: RunMarker | None  # None: not a run folder retention may touch
    problem: str = ""  # why not, when marker is None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def age_from(self) -> datetime:
        """The run's age: when it really ran (a backfilled night is as young as the run
        that made it; a future-dated one is not kept for years)."""
        assert self.marker is not None, f"{self.path} is not a run folder"
        return self.marker.age_from


def _marker(folder: ObjectStoragePath, dag_ids: tuple[str, ...]) -> tuple[RunMarker | None, str]:
    """FOLDER's marker if it names a run of one of DAG_IDS whose folder this is; else why not."""
    path = folder / RUN_MARKER
    try:
        if not path.exists():
            return None, f"no {RUN_MARKER}: not a run folder of this project (or from before runs had markers)"
        data = json.loads(path.read_text())
        marker = RunMarker.from_json(data)
        if marker.age_from.tzinfo is None:  # both dates must read, and compare with aware times
            raise ValueError(f"night {marker.night!r} or start {marker.started!r} has no time zone")
    except Exception as exc:  # a store's own errors, bad JSON, missing fields, bad dates
        return None, f"its {RUN_MARKER} is unreadable ({type(exc).__name__}: {str(exc)[:200]})"
    if marker.dag_id not in dag_ids:
        return None, f"a run of DAG {marker.dag_id!r}, not of {' or '.join(map(repr, dag_ids))}"
    if tag_safe_run_id(marker.run_id) != folder.name:
        return (
            None,
            f"its {RUN_MARKER} names run {marker.run_id!r}, whose folder would be {tag_safe_run_id(marker.run_id)!r}",
        )
    return marker, ""


def run_folders(root: ObjectStoragePath, dag_ids: tuple[str, ...]) -> list[RunFolder]:
    """Every entry right under ROOT, each a run of one of DAG_IDS (with its marker) or not
    (with why). A tuple, never a bare id: `in` a string would take its substrings."""
    assert isinstance(dag_ids, tuple), f"dag_ids must be a tuple of DAG ids, not {dag_ids!r}"
    if not root.exists():
        return []
    found = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if not entry.is_dir():
            found.append(RunFolder(entry, None, "a file, not a run folder"))
            continue
        marker, problem = _marker(entry, dag_ids)
        found.append(RunFolder(entry, marker, problem))
    return found


@dataclass(frozen=True)
class PushFacts:
    """What the runs' push records say about one registry repository."""

    run_tags: dict[str, datetime]  # tag -> when it was last pushed (runtime pushes' tags)
    framework_digests: dict[str, datetime]  # digest -> when a framework push last pushed it


def _push_records(run: RunFolder) -> list[tuple[str, PushResult]]:
    """(file name, record) of every push record of RUN; an unreadable one is logged and skipped."""
    records = []
    for path in (p for pattern in PUSH_RECORDS for p in run.path.glob(pattern)):
        try:
            records.append((path.name, PushResult.from_json(json.loads(path.read_text()))))
        except Exception as exc:  # a torn write, a store error: this record only
            log.warning("push record %s is unreadable (%s: %s): not used", path, type(exc).__name__, str(exc)[:200])
    return records


def push_facts(runs: list[RunFolder], registry: str, repository: str) -> PushFacts:
    """The push times of REGISTRY's REPOSITORY's tags and framework digests, from the push
    records of RUNS (the run folders of the DAGs retention expires). The latest push wins:
    a cleared push task re-pushes, and the image is then as young as that push."""
    tags: dict[str, datetime] = {}
    digests: dict[str, datetime] = {}
    for run in runs:
        if run.marker is None:
            continue
        for name, record in _push_records(run):
            if record.registry != registry or record.repository != repository or not record.pushed_at:
                continue
            try:
                when = aware(record.pushed_at)
            except ValueError:
                log.warning("push record %s/%s: pushed_at %r is not an ISO time", run.name, name, record.pushed_at)
                continue
            framework = name.startswith(f"push_{FRAMEWORK}_")  # push_{image}_{registry}.json
            for tag, digest in record.pushed.items():
                if framework:
                    digests[digest] = max(when, digests.get(digest, when))
                else:
                    tags[tag] = max(when, tags.get(tag, when))
    return PushFacts(tags, digests)
