"""The culprit DAG's own tasks. A run is one step of one finding's search; the search's
state travels in the conf of the run that takes the next step (Airflow 3.3 has no task
loops), so every step is a run of its own in the UI, and re-runnable from its state.

  begin       what this run is: the start of a search (an asset event's finding, or the
              Params of a run by hand), the next step of one (conf `state`), or a dispatch
              (the nightly's asset event: one search run per finding)
  step        the state of this step (a new search: from the commit range)
  candidates  (in each cell's group, skipped unless the finding is the cell's) the step's
              commits without an image: the build task maps over them
  runs        the step's test runs: each commit to test, R times, on its image by digest
              (the candidates just built, or a night's own)
  judge       (culprit/judge.py) reads the runs, advances the state, saves the finding;
              then the next step's run, or the report
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.errors import CulpritError
from include.nightly_ci.plan.culprit import CandidateCell
from include.nightly_ci.records import mark_run

if TYPE_CHECKING:
    from include.nightly_ci.culprit.search import State

Finding = dict[str, Any]  # {dag_id, nightly_run_id, night, cell, suite, tests, good: {...}, bad: {...}}


def search_run_id(finding: Mapping[str, Any], step: int) -> str:
    """The run of step STEP of FINDING's search: the same finding and step, the same run, so
    a cleared judge or dispatch triggers nothing twice."""
    return f"culprit__{finding['cell']}.{finding['suite']}__{finding['nightly_run_id']}__{step:02d}"


class BeginSearchOperator(BaseOperator):
    """What this run is; returns the dispatch task's trigger items (none unless this run
    dispatches), and XCom `start`: the finding a new search starts on."""

    ui_color = "#fbe9e7"

    def __init__(
        self,
        *,
        store: ArtifactStore,
        nightly_dag_id: str,
        suites: Mapping[str, Sequence[str]],  # cell -> its run-mode suites: what a search may name
        history_conn_id: str | None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.store = store  # where the run's marker goes: retention expires the run's files by it
        self.nightly_dag_id = nightly_dag_id
        self.suites = {cell: tuple(names) for cell, names in suites.items()}
        self.history_conn_id = history_conn_id

    def execute(self, context: Any) -> list[dict[str, Any]]:
        mark_run(self.store, context["dag_run"])  # first of all the run's files (see RunMarker)
        if not self.history_conn_id:
            raise CulpritError("history.conn_id is null: the culprit finder keeps its findings in the history store")
        ti, conf = context["ti"], dict(context["dag_run"].conf or {})
        dispatch: list[dict[str, Any]] = []
        start: Finding | None = None
        if "state" in conf:
            what = f"step {conf.get('step')} of the search of {_name(conf['finding'])}"
        elif found := _event_findings(context):
            dispatch = [{"trigger_run_id": search_run_id(f, 0), "conf": {"finding": f, "step": 0}} for f in found]
            what = f"a dispatch of {len(found)} finding(s): " + ", ".join(_name(f) for f in found)
        else:
            start = conf.get("finding") or self._by_hand(context)
            what = f"the start of the search of {_name(start)}"
        ti.xcom_push(key="start", value=start)
        self.log.info("This run is %s", what)
        return dispatch  # the dispatch task's items (Airflow maps over return values only)

    def _by_hand(self, context: Any) -> Finding:
        """The finding the Params of a run by hand describe (clear errors on each field)."""
        from include.nightly_ci.history.junit import node_id
        from include.nightly_ci.names import COMMIT_RE

        p, dag_run = context["params"], context["dag_run"]
        if p["cell"] not in self.suites:
            raise CulpritError(f"Param cell {p['cell']!r} is not a cell with run-mode suites: {', '.join(self.suites)}")
        cell, suites = p["cell"], self.suites[p["cell"]]
        if p["suite"] not in suites:
            raise CulpritError(f"Param suite {p['suite']!r} is not a run-mode suite of {cell}: {', '.join(suites)}")
        for name in ("good", "bad"):
            # Whole ids: a search fetches them by id, and a repository serves no abbreviation.
            given = p[name] or ""
            if not COMMIT_RE.fullmatch(given) or len(given) != 40:
                why = f"40 hex digits: git rev-parse {given or 'REF'}"
                raise CulpritError(f"Param {name} {p[name]!r} is not a whole commit id ({why})")
        tests = [t.strip() for t in p["tests"] if t.strip()]
        if not tests:
            raise CulpritError("Param tests is empty: give the failing tests' JUnit ids ('tests.unit.test_x::test_y')")
        for t in tests:
            try:
                node_id(t)
            except ValueError as exc:
                raise CulpritError(f"Param tests: {exc}") from None
        return {
            "dag_id": self.nightly_dag_id,
            "nightly_run_id": dag_run.run_id,
            "night": (dag_run.logical_date or dag_run.run_after).isoformat(),
            "cell": p["cell"],
            "suite": p["suite"],
            "tests": tests,
            "good": {"run_id": None, "commit": p["good"], "image": None},
            "bad": {"run_id": None, "commit": p["bad"], "image": None},
        }


def _name(finding: Mapping[str, Any]) -> str:
    return f"{finding['cell']}/{finding['suite']} of {finding['nightly_run_id']} ({len(finding['tests'])} test(s))"


def _event_findings(context: Any) -> list[Finding]:
    """The findings of the asset events that triggered this run, in order."""
    events = context.get("triggering_asset_events") or {}
    return [f for evs in events.values() for e in evs for f in ((e.extra or {}).get("findings") or [])]


class StepOperator(BaseOperator):
    """This step's state: XComs `state`, `finding`, `commits`, `step`, `cell` (the cells'
    candidates tasks skip unless it names theirs). Skipped in a dispatch run."""

    ui_color = "#fbe9e7"

    def __init__(
        self,
        *,
        begin_task_id: str,
        range_task_id: str,
        cells: Sequence[str],
        max_commits: int,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.begin_task_id, self.range_task_id = begin_task_id, range_task_id
        self.cells = tuple(cells)
        self.max_commits = max_commits

    def execute(self, context: Any) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        from include.nightly_ci.culprit.search import State

        ti, conf, p = context["ti"], dict(context["dag_run"].conf or {}), context["params"]
        if "state" in conf:
            finding, commits, step = conf["finding"], conf.get("commits") or {}, int(conf.get("step", 0))
            state = State.from_json(conf["state"])
        elif start := ti.xcom_pull(task_ids=self.begin_task_id, key="start"):
            finding, step = start, 0
            found = ti.xcom_pull(task_ids=self.range_task_id) or {}
            commits = {sha: [author, subject] for sha, author, subject in found.get("commits", [])}
            state = self._start(finding, list(commits), int(found.get("total", 0)), p)
        else:
            raise AirflowSkipException("a dispatch run: no search step here")
        if finding["cell"] not in self.cells:
            raise CulpritError(f"finding of cell {finding['cell']!r}, which is not one of {', '.join(self.cells)}")
        for key, value in (("state", state.to_json()), ("finding", finding), ("commits", commits), ("step", step),
                           ("cell", finding["cell"])):  # fmt: skip
            ti.xcom_push(key=key, value=value)
        what = (f"step {step} of {_name(finding)}: {state.mode}; test {[c[:12] for c in state.to_test()]}, "
                f"build {[c[:12] for c in state.to_build()]}")  # fmt: skip
        self.log.info("%s", what)
        return what

    def _start(self, finding: Finding, commits: list[str], total: int, p: Mapping[str, Any]) -> State:
        from include.nightly_ci.culprit import search

        good, bad = finding["good"], finding["bad"]
        images = {n["commit"]: n["image"] for n in (good, bad) if n.get("image")}
        k, r = int(p["parallelism"]), int(p["reruns"])
        if not commits and total == 0:
            return search.same_commit(finding["tests"], good["commit"], images, k=k, r=r)
        # A range longer than max_commits comes cut to max_commits + 1: enough to say so.
        return search.start(finding["tests"], good["commit"], commits, images, k=k, r=r,
                            budget_seconds=float(p["budget"]) * 3600, max_commits=self.max_commits)  # fmt: skip


class CandidatesOperator(BaseOperator):
    """The commits of this step a cell builds (the build task maps over them); skipped
    unless the step's finding is of the cell."""

    ui_color = "#fff4e5"

    def __init__(self, *, cell: str, step_task_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.cell = cell
        self.step_task_id = step_task_id

    def execute(self, context: Any) -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from include.nightly_ci.culprit.search import State

        ti = context["ti"]
        if ti.xcom_pull(task_ids=self.step_task_id, key="cell") != self.cell:
            raise AirflowSkipException(f"this step's finding is not of {self.cell}")
        builds = list(State.from_json(ti.xcom_pull(task_ids=self.step_task_id, key="state")).to_build())
        self.log.info("To build: %s", [c[:12] for c in builds] or "nothing (the nights' own images)")
        return builds


class CandidateRunsOperator(BaseOperator):
    """The step's test runs on LAYOUT's cell: an item per commit to test and attempt (the
    mapped test task's kwargs); XCom `state`: the step's state with the new images."""

    ui_color = "#fff4e0"

    def __init__(self, *, layout: CandidateCell, step_task_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.layout = layout
        self.step_task_id = step_task_id

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from include.nightly_ci.culprit.search import DONE, State
        from include.nightly_ci.history.junit import node_id

        ti = context["ti"]
        state = State.from_json(ti.xcom_pull(task_ids=self.step_task_id, key="state"))
        finding = ti.xcom_pull(task_ids=self.step_task_id, key="finding")
        builds = ti.xcom_pull(task_ids=self.layout.candidates_task.task_id) or []
        state = state.built(self._built(ti, builds))
        ti.xcom_push(key="state", value=state.to_json())
        if state.mode == DONE:
            self.log.info("The search is done (%s): nothing to run", state.status)
            return []
        job = self.layout.jobs.get(finding["suite"])
        if job is None:
            raise CulpritError(f"{self.layout.group_id} has no run-mode suite {finding['suite']!r}")
        tests = [node_id(t) for t in state.tests]
        items = [
            {"suite": job.suite, "commit": commit, "attempt": attempt, "image": state.images[commit],
             "tests": tests, "gpus": job.container_gpus, "timeout_minutes": job.timeout_minutes}
            for commit in state.to_test() for attempt in range(1, state.r + 1)
        ]  # fmt: skip
        self.log.info("%d runs: %s x %d", len(items), [c[:12] for c in state.to_test()], state.r)
        return items

    def _built(self, ti: Any, builds: list[str]) -> dict[str, str]:
        """The images this step's build task pushed, by commit (its map index i built BUILDS[i])."""
        if not builds:
            return {}
        task_id = self.layout.build_task.task_id
        refs = {}
        for i, commit in enumerate(builds):
            built = ti.xcom_pull(task_ids=task_id, map_indexes=i)
            if not built:
                raise CulpritError(f"{task_id}[{i}] ({commit[:12]}) handed on no image: clear it and this task")
            refs[commit] = f"{built['host']}/{built['repository']}@{built['digest']}"
        return refs
