"""The triage page's HTML: server-rendered, no script, no external asset (the page must
work where the machine has no internet), every string from the store or the request
escaped, and only http(s) or the page's own relative links in an href.

Links into the Airflow UI open in the top window (`target=_top`): Airflow shows the page
in a frame of its own UI, and a run opened inside that frame would nest a second UI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from urllib.parse import urlencode

from include.nightly_ci.history import views
from include.nightly_ci.history.records import QuarantineEntry

# Squares and cases by state: colour, and a word (the colour is never the only sign).
STATES = {
    views.PASSED: ("#b7e1c1", "pass"),
    views.FLAKY: ("#ffe08a", "flaky"),
    views.FAILED: ("#f4a3a3", "FAIL"),
    views.NOT_RUN: ("#dcdcdc", "not run"),
    "failed": ("#f4a3a3", "FAIL"),
    "error": ("#f4a3a3", "ERROR"),
    "skipped": ("#dcdcdc", "skip"),
    "quarantined": ("#d9c8f0", "quar."),
}
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1b1b1b}
nav{margin-bottom:12px}nav a,nav form{margin-right:14px;display:inline-block}
table{border-collapse:collapse;margin:8px 0 18px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3;font-weight:600}th .muted{font-weight:400}
td.sq{text-align:center;min-width:46px}td.sq a{color:#1b1b1b}
.muted{color:#666}.streak{background:#fff4e5;border:1px solid #f0c27b;padding:8px;margin:8px 0}
code{font-size:12px}h2{margin-top:22px}
"""


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def href(url: str | None) -> str:
    """URL when it is an http(s) address or one of the page's own; otherwise none (a stored
    `javascript:` never becomes a link)."""
    if url and (url.startswith(("http://", "https://", "/")) or url.split("?")[0] in ROUTES):
        return url
    return ""


ROUTES = ("./", "suite", "test", "night", "artifact", "findings")


def page_url(route: str, **params: object) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{route}?{query}" if query else route


def link(url: str | None, text: object, *, top: bool = False, title: str = "") -> str:
    target = href(url)
    if not target:
        return e(text)
    extra = (' target="_top"' if top else "") + (f' title="{e(title)}"' if title else "")
    return f'<a href="{e(target)}"{extra}>{e(text)}</a>'


@dataclass(frozen=True)
class Links:
    """Where each thing opens: runs and logs in the Airflow UI, files in the artifact store."""

    run: Callable[[str, str], str]  # (run_id, stored run_url) -> URL
    log: Callable[[str, str, int | None], str]  # (run_id, task_id, try_number)
    junit: Callable[[str, str], str]  # (run_id, task_id)
    output: Callable[[str, str], str]
    image: Callable[[str | None], str]
    # (dag_id, run_id, task_id, map_index): a task instance of any DAG (the culprit finder's runs)
    task: Callable[[str, str, str, int | None], str]


def layout(title: str, body: str, kind: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)} · nightly-ci triage</title>
<meta name="referrer" content="same-origin"><style>{STYLE}</style></head>
<body><nav><a href="./">Matrix</a><a href="{e(page_url("night", kind=kind))}">Latest night</a>
<a href="{e(page_url("findings", kind=kind))}">Culprit finder</a>
<form action="test" method="get"><input name="id" size="40" placeholder="test id (classname::name)" required>
<input type="hidden" name="kind" value="{e(kind)}"><button>Test history</button></form></nav>
<h1>{e(title)}</h1>
{body}
</body></html>"""


def error(status: int, message: str) -> str:
    return layout(f"{status}", f"<p>{e(message)}</p>", "nightly")


def _square(state: str, text: str, url: str, title: str, *, top: bool) -> str:
    colour, word = STATES.get(state, ("#ffffff", state))
    inner = link(url, f"{word}{text}", top=top, title=title)
    return f'<td class="sq {e(state)}" style="background:{colour}">{inner}</td>'


def _night_head(night: views.Night, kind: str) -> str:
    day = night.night[5:10]
    commit = (night.commit or "")[:8]
    url = page_url("night", run_id=night.run_id, kind=kind)
    return f'<th>{link(url, day, title=night.run_id)}<br><code class="muted">{e(commit)}</code></th>'


def matrix(m: views.Matrix, links: Links, suites: dict[str, list[str]]) -> str:
    if not m.nights:
        return layout(f"{m.dag_id}: no nights", f"<p>The history holds no {e(m.kind)} night of {e(m.dag_id)} yet.</p>",
                      m.kind)  # fmt: skip
    heads = "".join(_night_head(n, m.kind) for n in m.nights)
    rows = []
    for cell in m.cells:
        suite_links = " · ".join(
            link(page_url("suite", cell=cell, suite=s, kind=m.kind), s) for s in suites.get(cell, [])
        )
        squares = []
        for n in m.nights:
            sq = m.square(cell, n.run_id)
            count = f" {sq.failed}" if sq.failed else (f" {sq.soft}" if sq.soft else "")
            title = f"{cell} {n.night[:10]}: {sq.state}" + (f" ({', '.join(sq.suites)})" if sq.suites else "")
            squares.append(_square(sq.state, count, links.run(n.run_id, n.run_url), title, top=True))
        rows.append(f'<tr><th>{e(cell)}<br><span class="muted">{suite_links}</span></th>{"".join(squares)}</tr>')
    legend = " ".join(f'<span style="background:{STATES[s][0]};padding:1px 6px">{e(STATES[s][1])}</span>'
                      for s in (views.PASSED, views.FLAKY, views.FAILED, views.NOT_RUN))  # fmt: skip
    body = (f'<p class="muted">The last {len(m.nights)} {e(m.kind)} nights, newest first. A square is the worst '
            f"suite of its cell; the number: failing cases (flaky or quarantined ones, on a flaky square). "
            f"Each square opens its run. {legend}</p>"
            f'<table id="matrix"><tr><th>cell</th>{heads}</tr>{"".join(rows)}</table>')  # fmt: skip
    return layout(f"{m.dag_id}: the last {len(m.nights)} nights", body, m.kind)


def _files(links: Links, run_id: str, task_id: str, try_number: int | None, image: str | None) -> str:
    parts = [link(links.log(run_id, task_id, try_number), "log", top=True),
             link(links.junit(run_id, task_id), "JUnit"), link(links.output(run_id, task_id), "output")]  # fmt: skip
    if image:
        parts.append(link(links.image(image), "image", title=image))
    return " · ".join(parts)


def suite(dag_id: str, kind: str, cell: str, name: str, rows: Iterable[views.SuiteNight], links: Links) -> str:
    out = []
    for r in rows:
        counts = f"{r.passed} / {r.failed} / {r.flaky} / {r.quarantined} / {r.skipped}"
        out.append(
            f"<tr><td>{link(page_url('night', run_id=r.run_id, kind=kind), r.night[:16].replace('T', ' '))}</td>"
            f"{_square(r.state, '', links.run(r.run_id, r.run_url), r.run_id, top=True)}"
            f"<td>{e(_task_state(r))}</td>"
            f"<td>{e(r.tests if r.tests is not None else '-')}</td><td>{counts}</td>"
            f"<td>{e(f'{r.duration_sec:.0f} s' if r.duration_sec is not None else '')}</td><td>{e(r.host)}</td>"
            f"<td><code title=\"{e(r.image)}\">{e(short_image(r.image))}</code></td>"
            f"<td><code>{e((r.commit or '')[:10])}</code></td>"
            f"<td>{_files(links, r.run_id, r.task_id, r.try_number, r.image)}</td></tr>"
        )  # fmt: skip
    body = ("<table id=\"suite\"><tr><th>night</th><th>state</th><th>task</th><th>tests</th>"
            "<th>passed / failed / flaky / quarantined / skipped</th><th>time</th><th>host</th><th>image</th>"
            f"<th>commit</th><th>links</th></tr>{''.join(out)}</table>")  # fmt: skip
    return layout(f"{dag_id}: {cell} / {name}", body, kind)


def short_image(pinned: str | None) -> str:
    """repo@sha256:0123456789ab: the name and enough of the digest to tell images apart."""
    if not pinned or "@" not in pinned:
        return pinned or ""
    ref, digest = pinned.split("@", 1)
    return f"{ref.rsplit('/', 1)[-1]}@{digest[:19]}"


def _task_state(r: views.SuiteNight) -> str:
    return r.status + (f" / {r.outcome}" if r.outcome else "") + (f" ({r.failure_class})" if r.failure_class else "")


def _case_state(run: views.CaseRun) -> str:
    if run.outcome in ("failed", "error"):
        return views.FLAKY if run.verdict == "flaky" else "quarantined" if run.quarantined else run.outcome
    return views.PASSED if run.outcome == "passed" else run.outcome


def _night_ref(n: views.Night, links: Links, kind: str, commit_id: str) -> str:
    day = link(page_url("night", run_id=n.run_id, kind=kind), n.night[:10])
    run = link(links.run(n.run_id, n.run_url), "run", top=True)
    return f'{day} ({run}), commit <code id="{commit_id}">{e(n.commit)}</code>'


def _streak(h: views.TestHistory, links: Links, kind: str) -> str:
    if h.first_bad is None:
        return '<p class="streak" id="streak">Not failing now: no failure streak.</p>'
    bad, good = h.first_bad, h.last_good
    first = f"First failing night of the current streak: {_night_ref(bad, links, kind, 'first-bad')}."
    if good is None:
        return f'<div class="streak" id="streak"><p>{first}</p><p>No good night before it in the history.</p></div>'
    last = f"Last good night before it: {_night_ref(good, links, kind, 'last-good')}."
    between = f"git log --oneline {good.commit or '?'}..{bad.commit or '?'}"
    return (f'<div class="streak" id="streak"><p>{first}</p><p>{last}</p>'
            f"<p>The commits between them: <code id=\"commit-range\">{e(between)}</code></p></div>")  # fmt: skip


def test(dag_id: str, kind: str, h: views.TestHistory, links: Links, findings: str = "") -> str:
    """A test's history; FINDINGS: the culprit finder's section (ui/finding_pages.py), after its streak."""
    by_key: dict[tuple[str, str], dict[str, views.CaseRun]] = {}
    for run in h.runs:
        by_key.setdefault((run.cell, run.suite), {})[run.run_id] = run
    heads = "".join(_night_head(n, kind) for n in h.nights)
    grid = []
    for (cell, name), runs in sorted(by_key.items()):
        squares = []
        for n in h.nights:
            one = runs.get(n.run_id)
            if one is None:
                squares.append('<td class="sq muted">-</td>')
                continue
            url = links.log(one.run_id, one.task_id, one.try_number)
            title = f"{one.outcome}" + (f", {one.verdict}" if one.verdict else "") + (
                f", reruns {','.join(one.reruns)}" if one.reruns else "")  # fmt: skip
            squares.append(_square(_case_state(one), "", url, title, top=True))
        row_head = link(page_url("suite", cell=cell, suite=name, kind=kind), f"{cell} / {name}")
        grid.append(f"<tr><th>{row_head}</th>{''.join(squares)}</tr>")
    table = f'<table id="history"><tr><th>cell / suite</th>{heads}</tr>{"".join(grid)}</table>'
    runs_table = case_table(h.runs, links, kind, with_night=True, table_id="runs")
    body = f"{_streak(h, links, kind)}{findings}{table}<h2>Runs</h2>{runs_table}"
    return layout(f"{h.test_id}", body, kind)


def case_table(
    rows: Iterable[views.CaseRun], links: Links, kind: str, *, with_night: bool = False, table_id: str = ""
) -> str:
    out = []
    for r in rows:
        night = f"<td>{link(page_url('night', run_id=r.run_id, kind=kind), r.night[:10])}</td>" if with_night else ""
        out.append(
            f"<tr>{night}<td>{e(r.cell)}</td><td>{e(r.suite)}</td>"
            f"<td>{link(page_url('test', id=r.test_id, kind=kind), r.test_id)}</td>"
            f"{_square(_case_state(r), '', links.run(r.run_id, r.run_url), r.run_id, top=True)}"
            f"<td>{e(r.verdict or '')}</td><td>{e(', '.join(r.reruns))}</td><td>{'yes' if r.quarantined else ''}</td>"
            f"<td>{_files(links, r.run_id, r.task_id, r.try_number, r.image)}</td></tr>"
        )
    if not out:
        return f'<p class="muted" id="{e(table_id)}">None.</p>'
    head = "<th>night</th>" if with_night else ""
    heads = "".join(f"<th>{h}</th>" for h in ("cell", "suite", "test", "outcome", "verdict", "reruns", "quarantined"))
    return f'<table id="{e(table_id)}"><tr>{head}{heads}<th>links</th></tr>{"".join(out)}</table>'


def night(dag_id: str, kind: str, lists: views.NightLists, links: Links, findings: str = "") -> str:
    """A night's lists; FINDINGS: the culprit finder's section (ui/finding_pages.py), before the quarantine."""
    n = lists.night
    verdict = {True: "passed", False: "failed", None: "not decided"}[n.success]
    head = (f"<p>{link(links.run(n.run_id, n.run_url), n.run_id, top=True)} · commit <code>{e(n.commit)}</code> · "
            f"verdict: {e(verdict)}</p>")  # fmt: skip
    parts = [head]
    for title, rows, table_id in (
        ("New failures", lists.new_failures, "new-failures"),
        ("Still failing", lists.still_failing, "still-failing"),
        ("Fixed", lists.fixed, "fixed"),
        ("Flaky", lists.flaky, "flaky"),
        ("Quarantined", lists.quarantined, "quarantined"),
    ):
        parts.append(f"<h2>{e(title)} ({len(rows)})</h2>{case_table(rows, links, kind, table_id=table_id)}")
    parts.append(findings)
    parts.append(f"<h2>Active quarantine ({len(lists.entries)})</h2>{_entries(lists.entries)}")
    return layout(f"{dag_id}: {n.night[:10]}", "".join(parts), kind)


def _entries(entries: Iterable[QuarantineEntry]) -> str:
    rows = [
        f"<tr><td><code>{e(q.pattern)}</code></td><td>{e(q.owner)}</td><td>{e(q.reason)}</td>"
        f"<td>{link(q.issue, q.issue)}</td><td>{e(q.expires or '')}</td><td>{e(q.origin)}</td>"
        f"<td>{e(q.added[:10])}</td></tr>"
        for q in entries
    ]
    if not rows:
        return '<p class="muted" id="entries">None.</p>'
    return ('<table id="entries"><tr><th>pattern</th><th>owner</th><th>reason</th><th>issue</th><th>expires</th>'
            f"<th>origin</th><th>added</th></tr>{''.join(rows)}</table>")  # fmt: skip
