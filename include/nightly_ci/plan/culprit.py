"""The culprit DAG's plan: the tasks of a finding's search, named once.

A run of `{dag_id}_culprit` is one step of one finding's search (see culprit/search.py):
its common tasks decide the step, and each cell's group (only the finding's cell runs)
builds the candidates of the step and runs the failing tests on them. Its builds and test
runs take the culprit pool (a few slots, so the finder never starves the nightly) on the
queues of the cell's own pools (the workers that reach its builder and runners).
"""

from __future__ import annotations

from dataclasses import dataclass

from include.nightly_ci.names import BUILD, RERUN, tag_safe_run_id
from include.nightly_ci.plan.model import Cell, Plan, Reruns, TaskSpec, TestJob

CULPRIT_GROUP = "culprit"
# The common tasks of every run, in their order.
BEGIN, DISPATCH, RANGE, STEP, JUDGE, NEXT_STEP, REPORT_TASK = (
    "begin", "dispatch", "commit_range", "step", "judge", "next_step", "report",
)  # fmt: skip


@dataclass(frozen=True)
class CandidateCell:
    """One cell's tasks in the culprit DAG: CANDIDATES_TASK (the step's commits to build,
    skipped unless the finding is this cell's), BUILD_TASK (mapped: a candidate commit
    each), RUNS_TASK (the step's test runs: a commit and an attempt each) and TEST_TASK
    (mapped over them). Files: RUN/CELL/culprit/COMMIT12/ATTEMPT/."""

    cell: Cell
    reruns: Reruns  # the cell's run-mode suites: the only ones a regression can come from
    candidates_task: TaskSpec
    build_task: TaskSpec
    runs_task: TaskSpec
    test_task: TaskSpec

    @property
    def group_id(self) -> str:
        return self.cell.group_id

    @property
    def jobs(self) -> dict[str, TestJob]:
        return {j.suite: j for j in self.reruns.jobs}

    def artifact_dir(self, commit: str, attempt: int) -> str:
        return f"{self.group_id}/{CULPRIT_GROUP}/{commit[:12]}/{attempt}"

    def artifact_key(self, run_id: str, commit: str, attempt: int, name: str) -> str:
        """RUN/CELL/culprit/COMMIT12/ATTEMPT/NAME: the files of one run of the tests on one candidate."""
        return f"{tag_safe_run_id(run_id)}/{self.artifact_dir(commit, attempt)}/{name}"

    def record_key(self, run_id: str, map_index: int) -> str:
        return f"{tag_safe_run_id(run_id)}/{self.test_task.record_file.removesuffix('.json')}.{map_index}.json"

    def build_spec(self, commit: str) -> TaskSpec:
        """The build task's spec for one candidate: its own folder and record."""
        from dataclasses import replace

        short = commit[:12]
        return replace(
            self.build_task,
            artifact_dir=f"{self.group_id}/{CULPRIT_GROUP}/{short}",
            record_file=f"{self.group_id}/tasks/{CULPRIT_GROUP}.build.{short}.json",
        )


def candidate_tag_pattern(commit: str) -> str:
    """The tag pattern of a candidate's image (the build adds -build-runtime): one tag per
    candidate commit, whatever search built it last (the searches hand on digests)."""
    return f"culprit-{{framework}}-{{arch}}-{commit[:12]}"


def culprit_dag_id(plan: Plan) -> str:
    return f"{plan.dag_id}_culprit"


def candidate_cells(plan: Plan) -> tuple[CandidateCell, ...]:
    """The cells a regression can come from (those with run-mode suites), each with its tasks."""
    return tuple(_candidate_cell(plan, c, c.reruns) for c in plan.cells if c.reruns is not None)


def _candidate_cell(plan: Plan, cell: Cell, reruns: Reruns) -> CandidateCell:
    pool = plan.culprit.pool

    def spec(local: str, name: str, stage: str, own_pool: str | None, slots: int = 1) -> TaskSpec:
        return TaskSpec(
            task_id=f"{cell.group_id}.{local}",
            local_id=local,
            display_name=f"{cell.framework}-{cell.arch}-{name}",
            stage=stage,
            # Only builds and test runs take a slot (the culprit pool's, else the cell's own):
            # the tasks that only decide take none, so they never wait behind them.
            pool=(pool or own_pool) if own_pool else None,
            # The culprit pool counts tasks; a cell's GPU pool counts GPUs.
            pool_slots=1 if pool else slots,
            queue=plan.queues.get(own_pool) if own_pool else None,
            cell=cell.group_id,
            artifact_dir=f"{cell.group_id}/{CULPRIT_GROUP}",
            record_file=f"{cell.group_id}/tasks/{CULPRIT_GROUP}.{local}.json",
        )

    slots = max(j.pool_slots for j in reruns.jobs)
    return CandidateCell(
        cell=cell,
        reruns=reruns,
        candidates_task=spec("candidates", "culprit-candidates", BUILD, None),
        build_task=spec("build", "culprit-build", BUILD, cell.build_pool),
        runs_task=spec("runs", "culprit-runs", RERUN, None),
        test_task=spec("test", "culprit-test", RERUN, cell.test_pool, slots),
    )
