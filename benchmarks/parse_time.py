"""DAG parse time: the shipped config and generated larger matrices, against a one-task DAG.

Each measurement runs in a fresh process that has imported what a dag-processor's
parsing process has (airflow.dag_processing.processor: Airflow, pydantic, yaml,
croniter); it times DagBag parsing of a one-task DAG, then of dags/nightly_ci.py with
the config under test (our library's imports included), and lists every provider or SDK
module in sys.modules after the parse that was not there before it, with the module that
imported it. Our modules' bytecode is compiled once, before the first measurement, as a
dag-processor has it after its first parse of the file (it parses it every 30 s); the
compiled files go to a folder of the benchmark's own (PYTHONPYCACHEPREFIX). So is the
config's plan (include/nightly_ci/plan/cache.py: kept by the first parse, in a folder of
the benchmark's own); the parse after an edit of the config, which validates it again, is
measured too (NIGHTLY_CI_PLAN_CACHE=off) and printed, not judged.

Verdicts:
- the target: 40 cells in under 100 ms, and no provider or SDK module imported at parse
  by our code; Airflow's own imports for a feature the DAG uses are listed and allowed
  only as named in AIRFLOW_IMPORTS;
- --check (CI): a gross regression only, measured against the one-task DAG parsed in the
  same processes, so that a busy or slower machine moves both: 40 cells may take at most
  MAX_RATIO one-task parses.

    python benchmarks/parse_time.py [--repeat 7] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "include" / "config" / "nightly_ci.yaml"

ONE_TASK_DAG = """
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG("one_task", schedule=None):
    EmptyOperator(task_id="only")
"""

PROBE = r"""
import json, sys, time
import airflow.dag_processing.processor  # what the parsing process has loaded already
from airflow.dag_processing.dagbag import DagBag
HEAVY = ("airflow.providers.", "docker", "boto", "azure", "kubernetes", "slack_sdk")
importers = {}
class WhoImports:
    # Notes, for each heavy module, the module whose code imported it (the first frame
    # outside the import machinery); finds nothing itself.
    def find_spec(self, name, path=None, target=None):
        if name.startswith(HEAVY) and name not in importers:
            frame = sys._getframe(1)
            while frame and frame.f_code.co_filename.startswith("<frozen"):
                frame = frame.f_back
            where = f"{frame.f_globals.get('__name__')}:{frame.f_lineno}" if frame else "?"
            importers[name] = where
        return None
def heavy():
    return {m for m in sys.modules if m.startswith(HEAVY)}
before = heavy()
sys.meta_path.insert(0, WhoImports())
t = time.perf_counter(); bag = DagBag(sys.argv[2]); ours = time.perf_counter() - t
extra = {m: importers.get(m, "?") for m in sorted(heavy() - before)}
t = time.perf_counter(); DagBag(sys.argv[1]); baseline = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
(dag,) = bag.dags.values()
print(json.dumps({"baseline": baseline, "ours": ours, "tasks": len(dag.tasks), "extra_modules": extra}))
"""

# Provider modules Airflow itself imports for a feature of the SDK the DAG uses, with why;
# any other provider or SDK module in sys.modules after the parse fails the target.
AIRFLOW_IMPORTS = {
    # Airflow 3.3.2's MappedOperator asks every mapped task whether it is an EmptyOperator
    # (airflow/sdk/definitions/mappedoperator.py, _expand): a DAG with dynamic task mapping
    # (here each cell's flake reruns) has it in sys.modules, whatever the DAG imports.
    "airflow.providers.standard.operators.empty": "airflow.sdk.definitions.mappedoperator",
}
TARGET_S = 0.100  # 40 cells, on an idle machine
MAX_RATIO = 80  # --check: 40 cells in at most this many one-task parses (about 40 when on target)


def generated_config(folder: Path, frameworks: int, arches: int) -> Path:
    lines = [f"extends: {SHIPPED}", "frameworks:"]
    lines += [f"  fw{i}: {{build_args: {{FLAVOR: f{i}}}}}" for i in range(frameworks)]
    lines.append("arches:")
    for i in range(arches):
        pool = "cpu-arm-r8g-4xlarge" if i % 2 else "cpu-amd-m5-4xlarge"
        lines.append(f"  arch{i}: {{platform: linux/arch{i}, build_pool: {pool}, test_pool: gpu-l40-amd64}}")
    lines.append("overrides: {}")
    # The generated file replaces the shipped matrix, not adds to it.
    text = "\n".join(lines) + "\n"
    path = folder / f"matrix-{frameworks}x{arches}.yaml"
    path.write_text(text.replace(f"extends: {SHIPPED}", f"extends: {folder / 'base.yaml'}"))
    return path


def base_without_matrix(folder: Path) -> None:
    import yaml

    data = yaml.safe_load(SHIPPED.read_text())
    for key in ("frameworks", "arches", "overrides"):
        data.pop(key)
    (folder / "base.yaml").write_text(yaml.safe_dump(data))


def measure(config: Path, baseline_dir: Path, repeat: int, pycache: Path, plans: str) -> dict:
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "NIGHTLY_CI_CONFIG": str(config),
        "NIGHTLY_CI_PLAN_CACHE": plans,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT),
        "PYTHONPYCACHEPREFIX": str(pycache),
    }
    runs = []
    for _ in range(repeat + 1):  # the first compiles what it imports, and is not counted
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(baseline_dir), str(ROOT / "dags" / "nightly_ci.py")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    runs = runs[1:]
    return {
        "baseline_s": statistics.median(r["baseline"] for r in runs),
        "ours_s": statistics.median(r["ours"] for r in runs),
        "tasks": runs[0]["tasks"],
        "extra_modules": runs[0]["extra_modules"],
    }


def packages(modules: dict[str, str]) -> str:
    """Module names grouped by what they belong to: a provider or a top-level package."""
    names = set()
    for m in modules:
        parts = m.split(".")
        names.add(f"{parts[2]} provider" if m.startswith("airflow.providers.") else f"{parts[0]} SDK")
    return ", ".join(sorted(names)) or "none"


def unexplained(modules: dict[str, str]) -> dict[str, str]:
    """The heavy modules of MODULES (name: importer) that AIRFLOW_IMPORTS does not explain:
    imported by our code, or by Airflow for a reason not named there. What an explained
    module imports, and the packages it is in, are explained with it."""
    explained = {m for m, by in modules.items() if AIRFLOW_IMPORTS.get(m) == by.partition(":")[0]}
    while True:
        more = {
            m for m, by in modules.items()
            if m not in explained
            and (by.partition(":")[0] in explained or any(e.startswith(m + ".") for e in explained))
        }  # fmt: skip
        if not more:
            return {m: by for m, by in modules.items() if m not in explained}
        explained |= more


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--check", action="store_true", help="fail on a gross regression only (CI)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "baseline").mkdir()
        (folder / "baseline" / "one_task.py").write_text(ONE_TASK_DAG)
        base_without_matrix(folder)
        cases = [("shipped 3x2", SHIPPED, 6)]
        cases += [(f"generated {f}x{a}", generated_config(folder, f, a), f * a) for f, a in ((5, 2), (10, 2), (10, 4))]
        print(
            f"{'config':16} {'cells':>5} {'tasks':>5} {'one-task DAG':>13} {'nightly_ci':>11}  extra modules at parse"
        )
        results = []
        plans = str(folder / "plans")
        for name, path, cells in cases:
            r = measure(path, folder / "baseline", args.repeat, folder / "pycache", plans)
            results.append((cells, r["ours_s"], r["extra_modules"], r["baseline_s"]))
            print(
                f"{name:16} {cells:5d} {r['tasks']:5d} {r['baseline_s'] * 1000:10.1f} ms {r['ours_s'] * 1000:8.1f} ms  "
                f"{packages(r['extra_modules'])}"
            )
        edited = measure(cases[-1][1], folder / "baseline", args.repeat, folder / "pycache", "off")["ours_s"]
    (c0, t0, _, _), (c1, t1, _, one_task) = results[0], results[-1]
    print(f"{c1} cells after an edit of the config (validated again, once): {edited * 1000:.1f} ms")
    per_cell = (t1 - t0) / (c1 - c0)
    fixed = t0 - per_cell * c0
    print(f"per cell: {per_cell * 1000:.2f} ms (from {c0} to {c1} cells); fixed part: {fixed * 1000:.1f} ms")
    extra = {m: by for r in results for m, by in r[2].items()}
    for module, by in sorted(extra.items()):
        why = "Airflow's own (AIRFLOW_IMPORTS)" if module not in unexplained(extra) else "NOT EXPLAINED"
        print(f"in sys.modules after the parse, not before: {module}, imported by {by}: {why}")
    bad = unexplained(extra)
    ratio = t1 / one_task
    print(f"40 cells: {ratio:.0f} one-task parses ({one_task * 1000:.1f} ms each); gross regression above {MAX_RATIO}")
    if args.check:
        ok = ratio <= MAX_RATIO and not bad
        print(
            f"40 cells parse in {t1 * 1000:.0f} ms: {'no gross regression' if ok else 'REGRESSION'}"
            f"{'; provider or SDK modules imported by our code: ' + ', '.join(bad) if bad else ''}"
        )
        return 0 if ok else 1
    ok = t1 < TARGET_S and not bad
    verdict = "meets" if ok else "MISSES"
    print(f"40 cells parse in {t1 * 1000:.0f} ms, no provider imported by our code: {verdict} the 100 ms target")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
