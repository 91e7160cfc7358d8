"""The culprit finder's cost: builds, rounds and wall time of a search, for k = 1 and k = 3.

Pure: the search (culprit/search.py) against every culprit position among N commits: its
worst builds and rounds, beside the bounds ceil(log2 N) + 2 builds and ceil(log_(k+1) N)
rounds.

Real: for each N and k, one search on the local setup (the sample project's repository
with N commits after the last good one, the culprit at the pure search's worst position;
real BuildKit builds of the runtime target with the registry cache, real test runs in
containers, each step a run of `nightly_ci_culprit`, run as the e2e tests run it): wall
time, builds, rounds, the candidates' build time and cache hits. A search started by hand
does not know the last good night's image, so its replay builds it: reported apart.

    python benchmarks/culprit.py [--n 16 64] [--k 1 3] [--pure-only]

Run it through `make bench` (the local environment: scripts/local_env.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from include.nightly_ci.culprit.search import DONE, State, start  # noqa: E402

TEST = "tests.unit.test_router::test_round_robin"


def pure(n: int, k: int, culprit: int, r: int = 3) -> State:
    """The search of a planted culprit at index CULPRIT of N commits, to its end."""
    commits = [f"c{i:03d}" for i in range(n)]
    state = start([TEST], "good", commits, {"good": "g", commits[-1]: "b"}, k=k, r=r, budget_seconds=1e9,
                  max_commits=1024)  # fmt: skip
    while state.mode != DONE:
        state = state.built({c: c for c in state.to_build()})
        outcome = {c: "failed" if c != "good" and int(c[1:]) >= culprit else "passed" for c in state.to_test()}
        state = state.advance({c: {TEST: [outcome[c]] * r} for c in state.to_test()}, 0.0)
    return state


def worst(n: int, k: int) -> dict[str, Any]:
    runs = [(c, pure(n, k, c)) for c in range(n)]
    position = max(runs, key=lambda cs: (cs[1].builds, cs[1].rounds))[0]
    return {
        "n": n,
        "k": k,
        "worst_builds": max(s.builds for _, s in runs),
        "worst_rounds": max(s.rounds for _, s in runs),
        "mean_builds": round(statistics.mean(s.builds for _, s in runs), 2),
        "bound_builds": math.ceil(math.log2(n)) + 2,
        "bound_rounds": math.ceil(math.log(n) / math.log(k + 1) - 1e-9),
        "worst_position": position,
    }


def real(n: int, k: int, culprit: int, work: Path) -> dict[str, Any]:
    """One search on the local setup; its figures."""
    from dev.sample_repo import add_commits, make_repo, nightly_history
    from include.nightly_ci.history import findings
    from include.nightly_ci.history.store import HistoryStore
    from tests.services import run_culprit, write_config

    repo = work / "sample.git"
    from datetime import UTC, datetime

    good = make_repo(repo, nightly_history(1, datetime.now(UTC)))[-1]
    # Commits of their own (every candidate's source is new to the builder's cache), as a night's are.
    commits = add_commits(repo, n, culprit_at=culprit, prefix=f"change {time.time_ns()}")
    config = write_config(work / "nightly.yaml", f"source: {{repository: {repo}}}\nartifacts: {{base: {work / 'a'}}}\n")
    conf = {"cell": "vllm_amd64", "suite": "unit", "good": good, "bad": commits[-1], "tests": [TEST], "parallelism": k}
    t0 = time.monotonic()
    steps = run_culprit(config, conf)
    wall = time.monotonic() - t0
    store = HistoryStore(f"sqlite:///{work / 'history.db'}")
    try:
        (found,) = findings.load(store, "nightly_ci")
    finally:
        store.close()
    builds = [json.loads(p.read_text()) for p in (work / "a").glob("*/vllm_amd64/culprit/*/metrics-runtime.json")]
    candidates = [b for b in builds if b["commit"] != good]
    cached, total = sum(b["steps_cached"] for b in candidates), sum(b["steps_total"] for b in candidates)
    return {
        "n": n,
        "k": k,
        "culprit_position": culprit,
        "status": found.status,
        "found": found.culprit == commits[culprit],
        "rounds": found.rounds,
        "builds_total": found.builds,
        "builds_replay": len(builds) - len(candidates),
        "builds_candidates": len(candidates),
        "dag_runs": len(steps),
        "wall_seconds": round(wall, 1),
        "candidate_build_seconds_mean": round(statistics.mean(b["build_duration_sec"] for b in candidates), 2),
        "candidate_steps_cached": f"{cached}/{total}",
        "gpu_seconds": found.gpu_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--pure-only", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = {"pure": [], "real": []}
    for n in args.n:
        for k in args.k:
            w = worst(n, k)
            results["pure"].append(w)
            print(f"[bench] pure N={n} k={k}: worst {w['worst_builds']} builds (bound {w['bound_builds']}), "
                  f"{w['worst_rounds']} rounds (bound {w['bound_rounds']}), mean {w['mean_builds']} builds",
                  flush=True)  # fmt: skip
    if not args.pure_only:
        from tests.services import airflow_db

        airflow_db()
        for w in results["pure"]:
            with tempfile.TemporaryDirectory(prefix="nci-bench-culprit-") as tmp:
                r = real(w["n"], w["k"], w["worst_position"], Path(tmp))
            results["real"].append(r)
            print(f"[bench] real N={r['n']} k={r['k']} culprit at {r['culprit_position']}: {r['status']} "
                  f"(found: {r['found']}) in {r['wall_seconds']} s, {r['dag_runs']} DAG runs, {r['rounds']} rounds, "
                  f"{r['builds_candidates']} candidate builds + {r['builds_replay']} replay build, candidates "
                  f"{r['candidate_build_seconds_mean']} s each, {r['candidate_steps_cached']} steps cached",
                  flush=True)  # fmt: skip
    out = ROOT / ".local" / "bench-culprit.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"[bench] figures: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
