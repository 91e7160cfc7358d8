"""The critical path of a task graph: shared by the demo (measured run times) and the
makespan benchmark (the seed's typical durations)."""

from __future__ import annotations


def critical_path(upstream: dict[str, set[str]], seconds: dict[str, float]) -> tuple[float, list[str]]:
    """The longest chain through UPSTREAM (task -> the tasks it waits for), each task
    counting its SECONDS (0 when missing): its length and its tasks, first to last."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}

    def end(task: str) -> float:
        if task not in finish:
            best = max(upstream[task], key=end, default=None)
            via[task] = best
            finish[task] = (end(best) if best else 0.0) + seconds.get(task, 0.0)
        return finish[task]

    last = max(upstream, key=end)
    path: list[str] = []
    step: str | None = last
    while step:
        path.append(step)
        step = via[step]
    return finish[last], path[::-1]
