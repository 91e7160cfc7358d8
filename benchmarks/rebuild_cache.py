"""Rebuild on an emptied builder, against a cold build of the same cell.

Runs the real DAG (`airflow dags test`) for one cell against two fresh registries with
auth on loopback, each night on a Docker engine of its own that holds the base images
only (no other image, no build cache):
  1. cold: nothing in the registries;
  2. rebuild of the same commit, on another such engine: the only cache is what the
     registry holds (the images' inline cache).
Reports steps, cache hits (counted from BuildKit's own output) and durations of both
builds of the cell, from the metrics files the build tasks write. Target: at least 90%
of steps cached on the rebuild, for both targets.

    python benchmarks/rebuild_cache.py [--framework vllm] [--arch amd64]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="nightly-ci-bench-airflow-")
atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

from dev.sample_repo import make_repo, nightly_history  # noqa: E402
from include.nightly_ci.names import tag_safe_run_id  # noqa: E402
from tests.services import (  # noqa: E402
    ALL_BASES,
    LocalRegistry,
    airflow_db,
    empty_engine_of_its_own,
    ensure_provisioned,
    run_dag,
    run_id_of,
    write_config,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", default="vllm")
    parser.add_argument("--arch", default="amd64")
    args = parser.parse_args()
    ensure_provisioned()
    airflow_db()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ecr, acr = LocalRegistry(root / "ecr"), LocalRegistry(root / "acr")
        ecr.start()
        acr.start()
        try:
            repo = root / "sample.git"
            make_repo(repo, nightly_history(1, datetime.now(UTC)))
            config = write_config(
                root / "c.yaml",
                f"source: {{repository: {repo}}}\nregistries:\n  ecr: {{conn_id: b_ecr}}\n  acr: {{conn_id: b_acr}}\n"
                f"artifacts: {{base: {root / 'artifacts'}}}\n",
            )
            env = {**ecr.conn_env("b_ecr"), **acr.conn_env("b_acr", "azure_container_registry")}
            # A run moves the moving tags a rebuild reads cache from, as a scheduled night does
            # (a manual run moves none unless its conf says so: plan.publishes).
            conf = {"frameworks": [args.framework], "arches": [args.arch], "publish": True}
            rows = []
            bases = tuple(b for b in ALL_BASES if b.endswith(f"-{args.arch}"))
            for phase, night in (("cold", "2026-11-27T08:00:00+00:00"), ("rebuild", "2026-11-28T08:00:00+00:00")):
                # An emptied builder: an engine of the benchmark's own with the base images only
                # and no build cache. Not the setup's engine emptied: other work may be using
                # it, and after runs that emptied it its later builds failed ("failed to get
                # layer ... layer does not exist", docs/benchmarks.md) until it was made again.
                with empty_engine_of_its_own(f"bench-{phase}", *bases) as emptied:
                    proc = run_dag(config, logical_date=night, conf=conf, env={**env, "DOCKER_HOST": emptied.url})
                if proc.returncode != 0:
                    print(proc.stdout[-4000:])
                    return 1
                cell_dir = (
                    root / "artifacts" / tag_safe_run_id(run_id_of(proc.stdout)) / f"{args.framework}_{args.arch}"
                )
                for image in ("framework", "runtime"):
                    m = json.loads((cell_dir / "build" / f"metrics-{image}.json").read_text())
                    rows.append((phase, image, m))
        finally:
            ecr.stop()
            acr.stop()
    print(f"cell {args.framework}/{args.arch}: each night on an engine of its own holding only the base images")
    print(f"{'phase':8} {'image':10} {'steps':>5} {'cached':>6} {'hit rate':>8} {'build s':>8}  stages (s)")
    for phase, image, m in rows:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in m["stage_duration_sec"].items())
        print(
            f"{phase:8} {image:10} {m['steps_total']:5d} {m['steps_cached']:6d} {m['cache_hit_rate']:8.0%} "
            f"{m['build_duration_sec']:8.2f}  {stages}"
        )
    totals = {}
    for phase in ("cold", "rebuild"):
        steps = sum(m["steps_total"] for p, _, m in rows if p == phase)
        cached = sum(m["steps_cached"] for p, _, m in rows if p == phase)
        secs = sum(m["build_duration_sec"] for p, _, m in rows if p == phase)
        totals[phase] = (steps, cached, secs)
        print(f"{phase:8} {'both':10} {steps:5d} {cached:6d} {cached / steps:8.0%} {secs:8.2f}")
    rates = [m["cache_hit_rate"] for p, _, m in rows if p == "rebuild"]
    ok = min(rates) >= 0.9
    print(
        f"rebuild: {min(rates):.0%} of steps cached in the worse of the two targets "
        f"({'meets' if ok else 'MISSES'} the 90% target), {totals['rebuild'][2]:.1f} s against "
        f"{totals['cold'][2]:.1f} s cold"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
