"""The checks a config must pass beyond its types: names that refer to each other, tag
patterns, marker expressions, cron strings and memory sizes. Every finding at once."""

from __future__ import annotations

import re

from include.nightly_ci.config.markers import check_marker_expression
from include.nightly_ci.config.schema import NightlyConfig
from include.nightly_ci.errors import Finding, MarkerError
from include.nightly_ci.names import path_pattern_problem, render_tag, tag_pattern_problem


def semantic_findings(cfg: NightlyConfig) -> list[Finding]:
    found: list[Finding] = []
    for arch, fws in cfg.overrides.items():
        if arch not in cfg.arches:
            found.append(
                Finding(f"overrides.{arch}", f"override for unknown arch {arch!r} (arches: {', '.join(cfg.arches)})")
            )
        for fw in fws:
            if fw not in cfg.frameworks:
                found.append(
                    Finding(
                        f"overrides.{arch}.{fw}",
                        f"override for unknown framework {fw!r} (frameworks: {', '.join(cfg.frameworks)})",
                    )
                )
    for arch, settings in cfg.arches.items():
        for field in ("build_pool", "test_pool"):
            pool = getattr(settings, field)
            if pool not in cfg.pools:
                found.append(
                    Finding(
                        f"arches.{arch}.{field}",
                        f"pool {pool!r} is not defined under pools (defined: {', '.join(cfg.pools)})",
                    )
                )
    if cfg.culprit.pool is not None and cfg.culprit.pool not in cfg.pools:
        found.append(
            Finding(
                "culprit.pool",
                f"pool {cfg.culprit.pool!r} is not defined under pools (defined: {', '.join(cfg.pools)})",
            )
        )
    problem = path_pattern_problem(cfg.source.dockerfile)
    if problem:
        found.append(Finding("source.dockerfile", problem))
    found += _source_findings(cfg)
    for field, pattern in cfg.tags.model_dump().items():
        problem = tag_pattern_problem(pattern, require_run_id=(field == "run"))
        if problem:
            found.append(Finding(f"tags.{field}", problem))
    patterns = list(cfg.tags.model_dump().values())
    if len(set(patterns)) != len(patterns):
        found.append(Finding("tags", "the framework, nightly and run tag patterns must differ"))
    elif not any(f.path.startswith("tags.") for f in found):
        found += _tag_collisions(cfg)
    for image in ("framework", "runtime"):
        if not any(image in r.images for r in cfg.registries.values()):
            found.append(Finding("registries", f"no registry receives {image} images"))
    for name, reg in cfg.registries.items():
        if len(set(reg.images)) != len(reg.images):
            found.append(Finding(f"registries.{name}.images", "lists an image kind twice"))
    found += _test_findings(cfg)
    found += _artifact_findings(cfg)
    if cfg.build.framework_target == cfg.build.runtime_target:
        found.append(Finding("build.runtime_target", "must differ from build.framework_target"))
    if cfg.build.push_backoff_max_seconds < cfg.build.push_backoff_seconds:
        found.append(Finding("build.push_backoff_max_seconds", "must be at least build.push_backoff_seconds"))
    from croniter import croniter

    for path, cron in (("dag.schedule", cfg.dag.schedule), ("retention.schedule", cfg.retention.schedule)):
        if not croniter.is_valid(cron):
            found.append(Finding(path, f"{cron!r} is not a valid cron expression"))
    return found


def _source_findings(cfg: NightlyConfig) -> list[Finding]:
    """No credentials in the repository URL (M5): it is shown in the DAG doc, handed on in
    XCom and stamped on every image; they belong in the connection source.conn_id names.
    The message never repeats the URL."""
    from urllib.parse import urlsplit

    url = cfg.source.repository
    parts = urlsplit(url) if "://" in url else None
    scheme = parts.scheme.lower() if parts else ""
    found = []
    # ssh://git@host names a user, which is no secret; over http(s) any user part is a token.
    if parts and (parts.password or (scheme in ("http", "https") and parts.username)):
        found.append(
            Finding(
                "source.repository",
                "has credentials in it (user:token@ or token@), which would show in the DAG doc and on every "
                "image: give the URL without them and the token in an Airflow connection named by source.conn_id",
            )
        )
    ssh_like = scheme == "ssh" or (not parts and re.match(r"^[\w.-]+@[\w.-]+:", url))
    if cfg.source.conn_id and scheme not in ("http", "https") and not ssh_like:
        found.append(
            Finding(
                "source.conn_id",
                "a connection gives git credentials for an https:// or ssh repository only; "
                f"source.repository is {'a ' + scheme + ':// URL' if scheme else 'a local path'}",
            )
        )
    return found


def _store_root_problem(base: str, scheme: str) -> str | None:
    """Why BASE is the root of a file system, bucket or container, or None (H3): the nightly
    wants a folder of its own there (retention only ever deletes its own run folders, but
    the report and other pipelines should not share one root)."""
    if scheme in ("file", "local"):
        path = base.split("://", 1)[1] if "://" in base else base
        return (
            f"{base!r} is the root of the file system: give the nightly a folder of its own"
            if path.strip("/") == ""
            else None
        )
    bucket, _, prefix = base.split("://", 1)[1].partition("/")
    if prefix.strip("/"):
        return None
    return (
        f"{base!r} is the root of a bucket or container, which other pipelines may share: give the "
        f"nightly a prefix of its own (like {scheme}://{bucket}/nightly)"
    )


def _artifact_findings(cfg: NightlyConfig) -> list[Finding]:
    """Every worker writes its records to the artifact store and the report reads them all
    back: a folder is one store only when every worker is on the same host."""
    art = cfg.artifacts
    scheme = art.base.split("://", 1)[0].lower() if "://" in art.base else "file"
    root = _store_root_problem(art.base, scheme)
    if root:
        return [Finding("artifacts.base", root)]
    if scheme in ("file", "local"):
        if art.single_host:
            return []
        return [
            Finding(
                "artifacts.base",
                f"{art.base!r} is a folder on each worker: on workers of more than one host every "
                "worker would keep its own records and the report would miss them. Use an object "
                "store (s3://, abfs://) with artifacts.conn_id, or set artifacts.single_host: true "
                "if this Airflow runs on one host",
            )
        ]
    if not art.conn_id:
        return [Finding("artifacts.conn_id", f"{art.base!r} is an object store: name the connection that reaches it")]
    return []


# A Kubernetes resource quantity (64Gi, 512Mi, 1.5G).
_K8S_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?([EPTGMK]i|[EPTGMk]|m)?")
# A Docker memory size (64g, 512m, 1.5GB): a subset of what docker-py's parse_bytes takes
# (tests/unit/test_config.py checks that it is one), without importing docker at parse time.
DOCKER_MEMORY = re.compile(r"[0-9]+(\.[0-9]+)?([kmgKMG][bB]?|[bB])?")
MEMORY = {"kubernetes": _K8S_QUANTITY, "docker": DOCKER_MEMORY}


def _memory_ok(backend: str, size: str) -> bool:
    return bool(MEMORY[backend].fullmatch(size))


def _test_findings(cfg: NightlyConfig) -> list[Finding]:
    found: list[Finding] = []
    for arch, settings in cfg.arches.items():
        pool = cfg.pools.get(settings.test_pool)
        if pool is not None and pool.runner is None:
            found.append(
                Finding(f"pools.{settings.test_pool}.runner", f"is required: arch {arch!r} runs its tests in this pool")
            )
    for name, pool in cfg.pools.items():
        runner = pool.runner
        if runner is not None and runner.memory is not None and not _memory_ok(runner.backend, runner.memory):
            found.append(
                Finding(
                    f"pools.{name}.runner.memory",
                    f"{runner.memory!r} is not a {runner.backend} memory size "
                    + ("(like 64g or 512m)" if runner.backend == "docker" else "(like 64Gi or 512Mi)"),
                )
            )
        if runner is not None:
            found += _volume_findings(cfg, name, runner.volumes)
    reg = cfg.tests.registry
    if reg is not None and (reg not in cfg.registries or "runtime" not in cfg.registries[reg].images):
        found.append(Finding("tests.registry", f"{reg!r} is not a registry that receives runtime images"))
    if not cfg.tests.suites:
        found.append(Finding("tests.suites", "needs at least one suite"))
    for name, suite in cfg.tests.suites.items():
        problem = marker_problem(suite.marker, next(iter(cfg.frameworks), "framework"))
        if problem:
            found.append(Finding(f"tests.suites.{name}.marker", problem))
    return found


def _volume_findings(cfg: NightlyConfig, pool: str, volumes: dict[str, str]) -> list[Finding]:
    """A read-only folder at or above one the tests need would hide it (the checkout in the
    image) or make it read-only (the JUnit, pytest's --basetemp): every suite would fail."""
    needed = (
        (cfg.tests.workdir, "the tests' workdir", " (tests.workdir)"),
        (cfg.tests.results_dir, "the JUnit folder", " (tests.results_dir)"),
        ("/tmp", "pytest's temporary folder", ""),  # --basetemp=/tmp in every pytest line
    )
    found = []
    for host, target in volumes.items():
        for folder, what, field in needed:
            if folder == target or folder.startswith(target + "/"):
                message = f"{target} would hide {what} {folder}{field}, or make it read-only"
                found.append(Finding(f"pools.{pool}.runner.volumes.{host}", message))
                break
    return found


def marker_problem(marker: str, framework: str) -> str | None:
    """Why MARKER (with {framework} filled in) is not a pytest marker expression, or None."""
    try:
        expr = marker.format(framework=framework)
    except (KeyError, IndexError, ValueError) as exc:
        return f"{marker!r}: only the placeholder {{framework}} is known ({exc})"
    try:
        check_marker_expression(expr)
    except MarkerError as exc:
        return f"{marker!r} is not a pytest marker expression: {exc}"
    return None


_SAMPLE_RUN = "scheduled__2026-01-01T08:00:00+00:00"  # an Airflow run id


def _tag_collisions(cfg: NightlyConfig) -> list[Finding]:
    """Two cells (or two kinds of tag) that would get the same tag overwrite each other's
    images: `{framework}_{arch}` gives a_b x c and a x b_c the same one."""
    found: list[Finding] = []
    owner: dict[str, tuple[str, str]] = {}  # tag -> (pattern field, cell)
    for field, pattern in cfg.tags.model_dump().items():
        for fw in cfg.frameworks:
            for arch in cfg.arches:
                tag, cell = render_tag(pattern, fw, arch, _SAMPLE_RUN), f"{fw} x {arch}"
                if tag not in owner:
                    owner[tag] = (field, cell)
                    continue
                other_field, other_cell = owner[tag]
                if other_field == field:
                    message = f"cells {other_cell} and {cell} both get {tag!r}"
                else:
                    message = f"the {field} tag of {cell} is the {other_field} tag of {other_cell}: {tag!r}"
                found.append(Finding(f"tags.{field}", f"{message}; put a separator names cannot hold between them"))
    return found
