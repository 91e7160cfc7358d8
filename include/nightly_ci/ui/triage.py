"""The triage page: a FastAPI app the plugin mounts in Airflow's api-server (under
PREFIX), behind Airflow's own login. It reads the history store (the config's
history.conn_id) and, for links, the artifact store; never Airflow's metadata database.

Routes (relative to PREFIX): `/` the matrix of cells by nights, `/suite?cell=&suite=` a
suite's history, `/test?id=` a test's history with its failure streak, `/night?run_id=`
one night's lists (default: the latest) with its culprit finder's findings, `/findings?status=`
every finding of the DAG, newest night first, `/artifact?run_id=&task_id=&file=junit|output`
a suite's file from a local artifact store. Every route takes `kind` (default nightly);
the history routes `nights` (default 14).

Built in the api-server only (the plugin makes it on first use): nothing here runs, or
is imported, when the scheduler or a worker loads the plugin.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightly_ci.errors import NightlyCiError
from include.nightly_ci.plan import JUNIT_FILE
from include.nightly_ci.ui import pages

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    from include.nightly_ci.history.store import HistoryStore
    from include.nightly_ci.plan import Plan

log = logging.getLogger(__name__)

PREFIX = "/nightly-ci"
NIGHTS, MAX_NIGHTS = 14, 365
TEST_FINDINGS, ALL_FINDINGS = 5, 100  # findings on a test's page, and on /findings
CACHE_SECONDS = 60.0  # a changed config (or connection) shows within a minute, without a parse per request
# A suite's files in the artifact store (the plan's layout; suites/base.py names output.log).
FILES = {"junit": (JUNIT_FILE, "application/xml"), "output": ("output.log", "text/plain")}


class NotFound(NightlyCiError):
    """What the request names is not there: answered 404 with this message (escaped)."""


@dataclass(frozen=True)
class Source:
    """What a request reads: the plan (names, artifact layout) and its history store."""

    plan: Plan
    history: HistoryStore | None  # None: the config keeps no history

    @property
    def store(self) -> HistoryStore:
        if self.history is None:
            raise NotFound(f"{self.plan.dag_id} keeps no history (history.conn_id is null in its config)")
        return self.history


_lock = threading.Lock()
_cached: list[tuple[float, Source]] = []


def source() -> Source:
    """The plan and its history store, made again after CACHE_SECONDS."""
    with _lock:
        if _cached and time.monotonic() - _cached[0][0] < CACHE_SECONDS:
            return _cached[0][1]
        from include.nightly_ci.history.store import HistoryStore
        from include.nightly_ci.plan import load_plan

        plan = load_plan()
        conn_id = plan.history.conn_id
        fresh = Source(plan, HistoryStore.from_connection(conn_id) if conn_id else None)
        if _cached:
            old = _cached.pop()[1].history
            if old is not None:
                old.close()
        _cached.append((time.monotonic(), fresh))
        return fresh


def links_for(plan: Plan) -> pages.Links:
    """Runs and logs in the Airflow UI; JUnit and output through the artifact store's
    console (S3) or, for a local store a browser cannot open, through this page."""
    from include.nightly_ci.ui.links import artifact_url, image_url, log_url, run_url

    local = "://" not in plan.store.base or plan.store.base.startswith("file://")

    def artifact(name: str) -> Callable[[str, str], str]:
        def url(run_id: str, task_id: str) -> str:
            spec = plan.by_id.get(task_id)
            if spec is None:  # a task the plan no longer has: its folder is not known
                return ""
            if local:
                return pages.page_url("artifact", run_id=run_id, task_id=task_id, file=name)
            return artifact_url(str(plan.store.root() / spec.artifact_key(run_id, FILES[name][0])))

        return url

    return pages.Links(
        run=lambda run_id, stored: stored or run_url(plan.dag_id, run_id),
        log=lambda run_id, task_id, try_number: log_url(plan.dag_id, run_id, task_id, try_number),
        junit=artifact("junit"),
        output=artifact("output"),
        image=image_url,
        task=lambda dag_id, run_id, task_id, map_index: log_url(dag_id, run_id, task_id, None, map_index),
    )


def _answer(what: str, build: Callable[[], Response | str]) -> Response:
    """BUILD's page; 404 for what is not there, a generic 500 (the detail only in the log)."""
    from fastapi.responses import HTMLResponse

    try:
        made = build()
        return HTMLResponse(made) if isinstance(made, str) else made
    except NotFound as exc:
        return HTMLResponse(pages.error(404, str(exc)), status_code=404)
    except Exception:
        log.exception("nightly-ci triage page: %s failed", what)
        return HTMLResponse(pages.error(500, "The triage page failed; the api-server's log says why."), status_code=500)


def _matrix(nights: int, kind: str) -> str:
    from include.nightly_ci.history import views

    src = source()
    m = views.matrix(src.store, src.plan.dag_id, kind, nights)
    # The suites each cell has in these nights (a suite the plan has but the store not
    # would open an empty history), in the plan's order.
    order = {job.suite: i for c in src.plan.cells for i, job in enumerate(c.tests)}
    suites: dict[str, list[str]] = {}
    for cell in m.cells:
        held = {s.split(":")[0] for n in m.nights for s in m.square(cell, n.run_id).suites}
        suites[cell] = sorted(held, key=lambda name: (order.get(name, len(order)), name))
    return pages.matrix(m, links_for(src.plan), suites)


def _suite(cell: str, suite: str, nights: int, kind: str) -> str:
    from include.nightly_ci.history import views

    src = source()
    rows = views.suite_history(src.store, src.plan.dag_id, kind, cell, suite, nights)
    if not rows:
        raise NotFound(f"no {kind} night of {src.plan.dag_id} in the history has suite {suite!r} of cell {cell!r}")
    return pages.suite(src.plan.dag_id, kind, cell, suite, rows, links_for(src.plan))


def _test(test_id: str, nights: int, kind: str) -> str:
    from include.nightly_ci.history import finding_views, views
    from include.nightly_ci.ui import finding_pages

    src = source()
    history = views.test_history(src.store, src.plan.dag_id, kind, test_id, nights)
    if history is None:
        raise NotFound(f"the history has no test {test_id!r}")
    found = finding_views.for_test(src.store, src.plan.dag_id, kind, test_id, TEST_FINDINGS)
    return pages.test(src.plan.dag_id, kind, history, links_for(src.plan), finding_pages.test_section(found, kind))


def _night(run_id: str | None, kind: str) -> str:
    from include.nightly_ci.history import findings, night_views
    from include.nightly_ci.ui import finding_pages

    src = source()
    lists = night_views.night_lists(src.store, src.plan.dag_id, kind, run_id)
    if lists is None:
        raise NotFound(
            f"the history has no {'run ' + repr(run_id) if run_id else kind + ' night'} of {src.plan.dag_id}"
        )
    links = links_for(src.plan)
    found = findings.load(src.store, src.plan.dag_id, lists.night.run_id)
    return pages.night(src.plan.dag_id, kind, lists, links, finding_pages.night_section(found, links, kind))


def _findings(status: str | None, kind: str) -> str:
    from include.nightly_ci.history import finding_views, findings
    from include.nightly_ci.ui import finding_pages

    if status is not None and status not in findings.STATUSES:
        raise NotFound(f"no finding status {status!r}: one of {', '.join(findings.STATUSES)}")
    src = source()
    found = finding_views.recent(src.store, src.plan.dag_id, kind, status, ALL_FINDINGS)
    return finding_pages.findings_page(src.plan.dag_id, kind, status, found, ALL_FINDINGS)


def _artifact(run_id: str, task_id: str, file: str) -> Response:
    from fastapi.responses import Response

    src = source()
    spec = src.plan.by_id.get(task_id)
    if file not in FILES or spec is None:
        raise NotFound(f"no file {file!r} of task {task_id!r} in {src.plan.dag_id}")
    name, media = FILES[file]
    path = src.plan.store.root() / spec.artifact_key(run_id, name)
    if not path.exists():
        raise NotFound(f"{task_id} of {run_id} left no {name} in the artifact store")
    # As text the browser shows, never as HTML it would run: the file is the test's output.
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"}
    return Response(path.read_bytes(), media_type=f"{media}; charset=utf-8", headers=headers)


async def _login_required(request: Request, exc: Exception) -> Response:
    """Not logged in: a browser goes to Airflow's login page and comes back; a script gets 401."""
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

    status = getattr(exc, "status_code", 500)
    if status == 401 and "text/html" in request.headers.get("accept", ""):
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(pages.error(status, str(getattr(exc, "detail", ""))), status_code=status)
    return JSONResponse({"detail": getattr(exc, "detail", "")}, status_code=status)


def create_app() -> FastAPI:
    """The app, every route behind Airflow's login (the UI's `_token` cookie or a bearer
    token, checked by Airflow's own `get_user`) and its permission to read the DAG's runs."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI, HTTPException, Query
    from fastapi.responses import HTMLResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    # Annotations are strings here (PEP 563) and FastAPI resolves them in the module: the
    # dependency is given as a default, not as an Annotated type of a local import.
    def may_read_runs(user: Any = Depends(get_user)) -> None:  # noqa: B008 - FastAPI's idiom
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

        dag_id = source().plan.dag_id
        if not get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
        ):
            raise HTTPException(403, f"you may not read the runs of {dag_id}")

    app = FastAPI(title="nightly-ci triage", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(may_read_runs)])  # fmt: skip
    app.add_exception_handler(StarletteHTTPException, _login_required)
    nights_q = Query(NIGHTS, ge=1, le=MAX_NIGHTS)

    @app.get("/", response_class=HTMLResponse)
    def home(nights: int = nights_q, kind: str = "nightly") -> Response:
        return _answer("the matrix", lambda: _matrix(nights, kind))

    @app.get("/suite", response_class=HTMLResponse)
    def suite(cell: str, suite: str, nights: int = nights_q, kind: str = "nightly") -> Response:
        return _answer("a suite's history", lambda: _suite(cell, suite, nights, kind))

    @app.get("/test", response_class=HTMLResponse)
    def test(id: str, nights: int = nights_q, kind: str = "nightly") -> Response:
        return _answer("a test's history", lambda: _test(id, nights, kind))

    @app.get("/night", response_class=HTMLResponse)
    def night(run_id: str | None = None, kind: str = "nightly") -> Response:
        return _answer("a night's lists", lambda: _night(run_id, kind))

    @app.get("/findings", response_class=HTMLResponse)
    def findings(status: str | None = None, kind: str = "nightly") -> Response:
        return _answer("the findings", lambda: _findings(status, kind))

    @app.get("/artifact")
    def artifact(run_id: str, task_id: str, file: str) -> Response:
        return _answer("an artifact", lambda: _artifact(run_id, task_id, file))

    return app


@functools.cache
def plugin_app() -> dict[str, Any]:
    """The plugin's fastapi_apps entry, made once per process."""
    return {"app": create_app(), "url_prefix": PREFIX, "name": "nightly-ci triage"}
