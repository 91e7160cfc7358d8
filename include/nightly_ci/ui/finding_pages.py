"""The culprit finder on the triage page (issue 13): a night's findings with their
evidence runs, a test's findings, and /findings, every finding of the DAG. The same rules
as pages.py: every stored string escaped (a commit's subject is anyone's text), links only
through pages.link, runs in the Airflow UI through Links (never a URL made here)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from include.nightly_ci.history.finding_views import status_words
from include.nightly_ci.history.findings import CULPRIT, STATUSES, CulpritFinding
from include.nightly_ci.ui.pages import Links, e, layout, link, page_url

SHORT = 12  # characters of a commit shown; the whole one in its title
TESTS_SHOWN = 3  # test ids on a line of /findings before "+N more"


def short(commit: str | None) -> str:
    return f'<code title="{e(commit)}">{e((commit or "")[:SHORT])}</code>'


def gpu_time(seconds: float) -> str:
    """GPU time the way a budget is read: minutes below an hour, hours above."""
    return f"{seconds / 60:.0f} GPU-minutes" if seconds < 3600 else f"{seconds / 3600:.2f} GPU-hours"


def cost(f: CulpritFinding) -> str:
    return f"{f.rounds} rounds · {f.builds} builds · {gpu_time(f.gpu_seconds)}"


def _test_links(tests: Sequence[str], kind: str, shown: int | None = None) -> str:
    kept = tests if shown is None else tests[:shown]
    parts = [link(page_url("test", id=t, kind=kind), t) for t in kept]
    more = len(tests) - len(kept)
    return ", ".join(parts) + (f' <span class="muted">+{more} more</span>' if more else "")


def _culprit(f: CulpritFinding) -> str:
    """The commit the search ended on, its author and subject; named a culprit only once verified."""
    if not f.culprit:
        return ""
    label = "Culprit" if f.status == CULPRIT else "Last candidate (not a verified culprit)"
    parent = f" (parent {short(f.parent)})" if f.parent else ""
    return (f'<p>{label}: <code>{e(f.culprit)}</code> by {e(f.author or "?")}: '
            f'<span class="subject">{e(f.subject or "")}</span>{parent}</p>')  # fmt: skip


def night_section(found: Iterable[CulpritFinding], links: Links, kind: str) -> str:
    """The night page's section: one block per finding, with its evidence runs."""
    blocks = [_block(f, links, kind) for f in found]
    body = "".join(blocks) if blocks else '<p class="muted" id="findings">None.</p>'
    if blocks:
        body = f'<div id="findings">{body}</div>'
    return f'<h2 id="culprit-finder">Culprit finder ({len(blocks)})</h2>{body}'


def _block(f: CulpritFinding, links: Links, kind: str) -> str:
    return (f'<div class="finding" data-status="{e(f.status)}"><h3>{e(f.cell)} / {e(f.suite)}</h3>'
            f"<p><strong>{e(status_words(f))}</strong> · range {short(f.good_commit)}..{short(f.bad_commit)} · "
            f'{cost(f)} <span class="muted">(updated {e(f.updated[:16].replace("T", " "))})</span></p>'
            f"<p>Tests: {_test_links(f.tests, kind)}</p>{_culprit(f)}{_evidence(f.evidence, links)}</div>")  # fmt: skip


def _evidence(entries: Sequence[Mapping[str, Any]], links: Links) -> str:
    if not entries:
        return '<p class="muted">No runs yet.</p>'
    rows = []
    for entry in entries:
        runs = entry.get("runs")
        per_test = "<br>".join(
            f"<code>{e(test)}</code>: {e(', '.join(map(str, outcomes)))}"
            for test, outcomes in (runs.items() if isinstance(runs, Mapping) else ())
            if isinstance(outcomes, list)
        )
        commit = entry.get("commit")
        title = f"{commit or ''} {entry.get('image') or ''}".strip()
        rows.append(f"<tr><td>{e(entry.get('round', ''))}</td><td>{e(entry.get('mode', ''))}</td>"
                    f'<td><code title="{e(title)}">{e(str(commit or "")[:SHORT])}</code></td>'
                    f"<td>{e(entry.get('verdict', ''))}</td><td>{per_test}</td>"
                    f"<td>{_task_link(entry, links)}</td></tr>")  # fmt: skip
    return ('<table class="evidence"><tr><th>round</th><th>mode</th><th>commit</th><th>verdict</th>'
            f"<th>runs per test</th><th>task</th></tr>{''.join(rows)}</table>")  # fmt: skip


def _task_link(entry: Mapping[str, Any], links: Links) -> str:
    """The culprit DAG's task instance that ran ENTRY's runs, when the entry names it."""
    where = [w for k in ("dag_id", "run_id", "task_id") if isinstance(w := entry.get(k), str) and w]
    if len(where) < 3:
        return ""
    dag_id, run_id, task_id = where
    index = entry.get("map_index")
    index = index if isinstance(index, int) and not isinstance(index, bool) else None
    name = task_id + (f"[{index}]" if index is not None and index >= 0 else "")
    return link(links.task(dag_id, run_id, task_id, index), "task", top=True, title=f"{dag_id} / {run_id} / {name}")


def _night_link(f: CulpritFinding, kind: str) -> str:
    url = page_url("night", run_id=f.nightly_run_id, kind=kind) + "#findings"
    return link(url, f.night[:10], title=f.nightly_run_id)


def _culprit_cell(f: CulpritFinding) -> str:
    if not f.culprit:
        return ""
    return f'{short(f.culprit)} {e(f.author or "?")}: <span class="subject">{e(f.subject or "")}</span>'


def test_section(found: Iterable[CulpritFinding], kind: str) -> str:
    """The test page's section: the test's last findings, each opening its night."""
    rows = [f"<tr><td>{_night_link(f, kind)}</td><td>{e(f.cell)} / {e(f.suite)}</td><td>{e(status_words(f))}</td>"
            f"<td>{_culprit_cell(f)}</td></tr>" for f in found]  # fmt: skip
    if not rows:
        return '<h2>Culprit finder</h2><p class="muted" id="test-findings">None.</p>'
    return ('<h2>Culprit finder</h2><table id="test-findings"><tr><th>night</th><th>cell / suite</th>'
            f"<th>status</th><th>culprit</th></tr>{''.join(rows)}</table>")  # fmt: skip


def findings_page(dag_id: str, kind: str, status: str | None, found: Sequence[CulpritFinding], limit: int) -> str:
    """/findings: every finding of DAG_ID, newest night first, one line each."""
    filters = [link(page_url("findings", kind=kind), "all") if status else "<strong>all</strong>"]
    filters += [f"<strong>{e(s)}</strong>" if s == status else link(page_url("findings", kind=kind, status=s), s)
                for s in STATUSES]  # fmt: skip
    rows = [f"<tr><td>{_night_link(f, kind)}</td><td>{e(f.cell)} / {e(f.suite)}</td>"
            f"<td>{_test_links(f.tests, kind, TESTS_SHOWN)}</td><td>{e(status_words(f))}</td>"
            f"<td>{short(f.good_commit)}..{short(f.bad_commit)}</td><td>{_culprit_cell(f)}</td>"
            f"<td>{cost(f)}</td></tr>" for f in found]  # fmt: skip
    table = ('<table id="all-findings"><tr><th>night</th><th>cell / suite</th><th>tests</th><th>status</th>'
             f"<th>range</th><th>culprit</th><th>cost</th></tr>{''.join(rows)}</table>"
             if rows else '<p class="muted" id="all-findings">None.</p>')  # fmt: skip
    intro = (f'<p class="muted">The culprit finder\'s findings of {e(kind)} nights, newest night first '
             f"(at most {limit}); each opens its night. Status: {' · '.join(filters)}</p>")  # fmt: skip
    return layout(f"{dag_id}: culprit finder" + (f" ({status})" if status else ""), intro + table, kind)
