"""Artifact expiry: whole run folders of the nightly and its culprit finder, aged by their marker.

Only a folder right under the base whose marker names a run of one of these DAGs (and this
very folder) is ever touched; anything else under the base (another team's files, a folder
without a marker, a run of another DAG sharing the base) is left alone and logged (H3).
A run's files all go together once the run is older than the keep days, the marker last,
so a deletion that stops half way is finished by the next day's run (C1: no file is aged
by the store's metadata).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from include.nightly_ci.names import RUN_MARKER
from include.nightly_ci.retention.facts import RunFolder, run_folders

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from include.nightly_ci.artifacts import ArtifactStore

log = logging.getLogger(__name__)


def _delete_run(run: RunFolder) -> int:
    """Every file of RUN, its marker last, then its empty folders; the files deleted."""
    paths = [p for p in run.path.rglob("*") if p.is_file() and p != run.path / RUN_MARKER]
    for path in paths:
        path.unlink()
    (run.path / RUN_MARKER).unlink()
    _remove_empty_dirs(run.path)
    return len(paths) + 1


def _remove_empty_dirs(folder: ObjectStoragePath) -> None:
    """FOLDER's now empty folders, deepest first (object stores have none to remove)."""
    if not folder.exists():
        return
    dirs = sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for path in [*dirs, folder]:
        try:
            path.rmdir()
        except FileNotFoundError:  # an object store's folder ends with its last file
            pass
        except OSError as exc:  # not empty: something was added meanwhile; it stays
            log.warning("left %s in place: %s", path, exc)


def expire_artifacts(
    store: ArtifactStore, dag_ids: tuple[str, ...], keep: timedelta, now: datetime, dry_run: bool
) -> list[str]:
    """Delete the run folders of DAG_IDS older than KEEP (by their marker); the folders deleted."""
    root = store.root()
    cutoff = now - keep
    runs = run_folders(root, dag_ids)
    if not runs:
        log.info("artifact store %s is empty", root)
    gone = []
    for run in runs:
        if run.marker is None:
            log.info("keep %s: %s; never touched by retention", run.path, run.problem)
            continue
        m = run.marker
        why = f"run {m.run_id!r} of {m.dag_id}, night {m.night}, started {m.started}"
        if run.age_from >= cutoff:
            log.info("keep %s: %s, within %d days", run.path, why, keep.days)
            continue
        count = "" if dry_run else f" ({_delete_run(run)} files)"
        log.info(
            "%s %s%s: %s, older than %d days", "would delete" if dry_run else "deleted", run.path, count, why, keep.days
        )
        gone.append(str(run.path))
    ours = sum(r.marker is not None for r in runs)
    log.info(
        "artifacts: %d of %d run folders of %s %s; %d other entries under %s left alone",
        len(gone),
        ours,
        " and ".join(dag_ids),
        "to delete (dry run)" if dry_run else "deleted",
        len(runs) - ours,
        root,
    )
    return gone
