"""Engine pruning: the images runs leave on builder and runner engines.

Every build leaves its image (and its `-run-` tags) on the builder's engine, every Docker
suite the runtime image it pulled on the runner's engine; nothing else removes them, and
the hosts fill up (M8). Only images carrying this project's run-id label are looked at,
aged by their created label (the run's build time); nothing else on an engine is touched.
An image a container still uses is refused by the engine, and kept.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.nightly_ci.errors import EngineUnavailable, NightlyCiError
from include.nightly_ci.names import LABEL_CREATED, LABEL_RUN_ID
from include.nightly_ci.retention.facts import aware

if TYPE_CHECKING:
    from docker import APIClient

log = logging.getLogger(__name__)


def engine_name(conn_id: str | None) -> str:
    return f"engine {conn_id!r}" if conn_id else "the worker's local engine"


def _age(image: dict[str, Any]) -> tuple[datetime | None, str]:
    stamp = (image.get("Labels") or {}).get(LABEL_CREATED)
    if not stamp:
        return None, f"no {LABEL_CREATED} label"
    try:
        return aware(stamp), f"built {stamp}"
    except ValueError:
        return None, f"its {LABEL_CREATED} label {stamp!r} is not an ISO time"


def _remove(client: APIClient, image: dict[str, Any]) -> str | None:
    """IMAGE's tags, then IMAGE itself, without force; why the engine refused, or None."""
    from docker.errors import APIError, NotFound

    try:
        for ref in [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]:
            client.remove_image(ref)  # one name: the image goes with its last one
        with contextlib.suppress(NotFound):  # NotFound: it went with its last name
            client.remove_image(image["Id"])  # pulled by digest, or left untagged: no name to remove
    except NotFound:
        return None
    except APIError as exc:  # 409: a container uses it (or a child image was built on it)
        return str(exc.explanation or exc)[:300]
    return None


def prune_engine(client: APIClient, where: str, keep: timedelta, now: datetime, dry_run: bool) -> list[str]:
    """Remove CLIENT's images of this project older than KEEP; the ids removed."""
    cutoff = now - keep
    removed = []
    images = client.images(filters={"label": LABEL_RUN_ID})
    # A running or stopped container's image: the engine refuses it, and a dry run must say so too.
    used = {c.get("ImageID") for c in client.containers(all=True)}
    for image in images:
        labels = image.get("Labels") or {}
        name = f"{where}: {image['Id'][:19]} {', '.join(image.get('RepoTags') or []) or '(untagged)'}"
        age, why = _age(image)
        if image["Id"] in used:
            log.info("keep %s (run %s): a container uses it", name, labels.get(LABEL_RUN_ID))
            continue
        if age is None or age >= cutoff:
            log.info(
                "keep %s (run %s): %s",
                name,
                labels.get(LABEL_RUN_ID),
                why if age is None else f"{why}, within {keep.days} days",
            )
            continue
        refused = None if dry_run else _remove(client, image)
        if refused:
            log.info("keep %s (run %s): the engine refused: %s", name, labels.get(LABEL_RUN_ID), refused)
            continue
        log.info(
            "%s %s (run %s): %s, older than %d days",
            "would remove" if dry_run else "removed",
            name,
            labels.get(LABEL_RUN_ID),
            why,
            keep.days,
        )
        removed.append(image["Id"])
    log.info(
        "%s: %d of %d images of this project %s",
        where,
        len(removed),
        len(images),
        "to remove (dry run)" if dry_run else "removed",
    )
    return removed


def prune_engines(conn_ids: tuple[str | None, ...], keep: timedelta, now: datetime, dry_run: bool) -> list[str]:
    """prune_engine on every engine of CONN_IDS (None: the local one); one that cannot be
    reached is logged, the others still pruned, then EngineUnavailable."""
    from include.nightly_ci.images.engine import engine_client

    removed, failed = [], []
    for conn_id in conn_ids:
        where = engine_name(conn_id)
        try:
            removed += prune_engine(engine_client(conn_id, timeout=300), where, keep, now, dry_run)
        except (NightlyCiError, OSError) as exc:
            log.error("%s not pruned: %s", where, exc)
            failed.append(f"{where}: {exc}")
    if failed:
        raise EngineUnavailable("; ".join(failed))
    return removed
