"""Summarise `airflow tasks states-for-dag-run -o json` (stdin) by stage for the demo."""

import collections
import json
import sys


def stage(task_id: str) -> str:
    if task_id in ("results_summary", "verdict", "notify_slack"):
        return "report"
    if ".tests." in task_id:
        return "test"
    if ".push_" in task_id:
        return "push"
    return "build" if ".build_" in task_id else "source"


rows = json.load(sys.stdin)
by_stage: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
for row in rows:
    by_stage[stage(row["task_id"])][row["state"]] += 1
for name in ("source", "build", "push", "test", "report"):
    print(f"[demo] {name:6} tasks: " + ", ".join(f"{n} {state}" for state, n in sorted(by_stage[name].items())))
for row in rows:
    if row["state"] != "success":
        print(f"[demo]   {row['task_id']}: {row['state']}")
