"""Makespan of a nightly: this DAG's real task graph against the original's stage order.

Durations are the seed's typical ones (midpoints of its ranges): amd64 builds 75 min,
arm64 builds 105 min, unit tests 15, integration 45, e2e 75. The seed gives none for an
arm64 collect-only run; --collect-minutes sets it (default 2). Pushes take no time here.

* critical path: the longest chain of the graph (unlimited runners);
* the original's order: every test also waits for every build (its `needs:` on all
  build jobs); same durations, same graph otherwise;
* and, for both, a list schedule within the config's pool slots (a 2-GPU suite takes 2).

    python benchmarks/makespan.py [--collect-minutes 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dev.graph import critical_path  # noqa: E402
from include.nightly_ci.names import BUILD as BUILD_STAGE  # noqa: E402
from include.nightly_ci.names import PUSH, TEST  # noqa: E402

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

BUILD = {"amd64": 75.0, "arm64": 105.0}
SUITE = {"unit": 15.0, "integration": 45.0, "e2e_1gpu": 75.0, "e2e_2gpu": 75.0}


def durations(plan, collect_minutes: float) -> dict[str, float]:
    """Every task's minutes, by the plan's cells (tasks outside cells take none)."""
    out = {t.task_id: 0.0 for t in plan.tasks()}
    for cell in plan.cells:
        out[cell.framework_build.task.task_id] = BUILD[cell.arch] * 2 / 3  # the framework stage is the heavy part
        out[cell.runtime_build.task.task_id] = BUILD[cell.arch] / 3
        for job in cell.tests:
            out[job.task.task_id] = collect_minutes if job.mode == "collect" else SUITE[job.suite]
    return out


def graph(dag, plan, original: bool) -> dict[str, set[str]]:
    """Upstream sets; with ORIGINAL, every test also waits for every build and push."""
    ups = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    if original:
        stage = {t.task_id: t.stage for t in plan.tasks()}
        builds = {t for t in ups if stage[t] in (BUILD_STAGE, PUSH)}
        for t in ups:
            if stage[t] == TEST:
                ups[t] |= builds
    return ups


def list_schedule(dag, ups, dur, pools: dict[str, int]) -> float:
    """Start any ready task whose pool has room, longest remaining chain first."""
    downs = defaultdict(set)
    for t, us in ups.items():
        for u in us:
            downs[u].add(t)
    tail: dict[str, float] = {}

    def rest(t: str) -> float:
        if t not in tail:
            tail[t] = dur[t] + max((rest(d) for d in downs[t]), default=0.0)
        return tail[t]

    tasks = {t.task_id: t for t in dag.tasks}
    free = dict(pools)
    done: set[str] = set()
    running: list[tuple[float, str]] = []
    now = 0.0
    while len(done) < len(tasks):
        ready = sorted(
            (t for t in tasks if t not in done and t not in {r for _, r in running} and ups[t] <= done),
            key=rest,
            reverse=True,
        )
        for t in ready:
            pool, slots = tasks[t].pool, tasks[t].pool_slots
            if free.get(pool, 10**6) >= slots:
                free[pool] = free.get(pool, 10**6) - slots
                running.append((now + dur[t], t))
        running.sort()
        now, t = running.pop(0)
        free[tasks[t].pool] = free.get(tasks[t].pool, 10**6) + tasks[t].pool_slots
        done.add(t)
    return now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect-minutes", type=float, default=2.0)
    args = parser.parse_args()
    os.environ["NIGHTLY_CI_CONFIG"] = str(ROOT / "include" / "config" / "nightly_ci.yaml")
    from include.nightly_ci.dag import dag_from_config
    from include.nightly_ci.plan import load_plan

    dag = dag_from_config()
    plan = load_plan()
    dur = durations(plan, args.collect_minutes)
    ours_g, orig_g = graph(dag, plan, original=False), graph(dag, plan, original=True)

    # No test waits for a build it does not need: its whole upstream is its own cell.
    for cell in plan.cells:
        for job in cell.tests:
            upstream = dag.task_dict[job.task.task_id].get_flat_relative_ids(upstream=True)
            cells = {plan.task(u).cell for u in upstream} - {None}
            assert cells == {cell.group_id}, (job.task.task_id, cells)

    ours, ours_path = critical_path(ours_g, dur)
    orig, orig_path = critical_path(orig_g, dur)
    pools = {name: slots for name, (slots, _) in plan.pools.items()}
    ours_sched = list_schedule(dag, ours_g, dur, pools)
    orig_sched = list_schedule(dag, orig_g, dur, pools)
    print(f"tasks: {len(dag.tasks)}; arm64 collect-only: {args.collect_minutes:g} min; pools: {pools}")
    print(f"{'':34} {'this DAG':>9} {'original':>9} {'shorter':>8}")
    print(f"{'critical path (unlimited runners)':34} {ours:7.0f} m {orig:7.0f} m {1 - ours / orig:8.1%}")
    saved = 1 - ours_sched / orig_sched
    print(f"{'list schedule within pool slots':34} {ours_sched:7.0f} m {orig_sched:7.0f} m {saved:8.1%}")
    print("this DAG's critical path:  " + " -> ".join(p for p in ours_path if dur[p]))
    print("original's critical path: " + " -> ".join(p for p in orig_path if dur[p]))
    print("every test waits only for its own cell's build and push: yes")
    return 0 if 1 - ours / orig >= 0.15 else 1


if __name__ == "__main__":
    raise SystemExit(main())
