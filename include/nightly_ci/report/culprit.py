"""The culprit finder's findings on Slack: one message per finding, threaded under the
night's own message where the Slack connection allows it.

The night's notify task, when it posts through the Slack API, leaves the channel and the
`ts` of its message in the night's folder (names.SLACK_THREAD); a finding posted through
the API to that same channel is a reply in that thread. A webhook can't thread: there the
finding is a message of its own. The finding is already saved in the history store when
this runs, so a Slack refusal fails the task but loses nothing (the triage page shows it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseOperator

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.history import findings as st
from include.nightly_ci.names import COMMIT_RE
from include.nightly_ci.report.slack import SECTION_LIMIT
from include.nightly_ci.ui.links import log_url, run_url

# The first line of each message: where the finding stands, in words.
HEADLINES = {
    st.CULPRIT: "culprit found and verified",
    st.EXTERNAL: "external: the last good night's image fails too",
    st.FLAKY: "flaky: handed to the flake handling",
    st.UNVERIFIED: "unverified: verification did not confirm the commit",
    st.PARTIAL: "partial: GPU budget spent before the end",
    st.TOO_LONG: "too long: not searched",
    st.SEARCHING: "still searching",
}
# Where a person must act; a flake is the flake handling's, a search is not over.
CALL_OPS = (st.CULPRIT, st.EXTERNAL, st.UNVERIFIED, st.PARTIAL, st.TOO_LONG)
MAX_TESTS, MAX_EVIDENCE = 20, 10  # named in the message; the rest are counted
FAILED_OUTCOMES = ("failed", "error")  # as the search counts a run (culprit.search.FAILED_RUN)
MAX_FIELD = 200  # an author or a subject longer than this is cut


def escape(text: str) -> str:
    """TEXT as Slack's mrkdwn shows it: its three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _field(text: str | None) -> str:
    text = (text or "").strip() or "unknown"
    return escape(text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 1] + "…")


def browsable(repository_url: str | None) -> str | None:
    """The repository's web address, for commit links: https only (an ssh, file or
    loopback http address opens nothing in a reader's browser), without `.git` and
    without any credentials the clone URL carries (they must never reach Slack)."""
    if not repository_url or not repository_url.startswith("https://"):
        return None
    parts = urlsplit(repository_url.rstrip("/").removesuffix(".git").rstrip("/"))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(("https", netloc, parts.path, "", "")) if host else None


def commit_ref(sha: str | None, repository: str | None) -> str:
    """A commit as 12 characters, linked to REPOSITORY's page of it when there is one."""
    if not sha:
        return "`unknown`"
    short = escape(sha[:12])
    return f"<{repository}/commit/{sha}|{short}>" if repository and COMMIT_RE.fullmatch(sha) else f"`{short}`"


def gpu_time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} GPU hours"
    minutes = round(seconds / 60)
    return "under a GPU minute" if seconds > 0 and minutes == 0 else _count(minutes, "GPU minute")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _what(finding: st.CulpritFinding, repo: str | None) -> str:
    """The finding in one or two sentences, per status."""
    good, bad = commit_ref(finding.good_commit, repo), commit_ref(finding.bad_commit, repo)
    if finding.status == st.CULPRIT:
        return f"{commit_ref(finding.culprit, repo)} by {_field(finding.author)}: {_field(finding.subject)}"
    if finding.status == st.EXTERNAL:
        return (f"The tests fail on the last good night's image ({good}) too: the cause is outside "
                f"{good}..{bad} (a driver, a node, the model hub, a registry). No commit is blamed.")  # fmt: skip
    if finding.status == st.FLAKY:
        return "A commit failed only once in its runs: nobody is blamed on one failure."
    if finding.status == st.UNVERIFIED:
        if not finding.culprit:
            return "The search ended without a commit that verification confirmed. Nobody is blamed."
        return (f"The search ended on {commit_ref(finding.culprit, repo)} by {_field(finding.author)}, but "
                "verification did not confirm it (it must fail and its parent pass). Nobody is blamed.")  # fmt: skip
    if finding.status == st.PARTIAL:
        return f"The GPU budget was spent. The range left: after {good}, at or before {bad}."
    if finding.status == st.TOO_LONG:
        return f"More commits from {good} to {bad} than culprit.max_commits allows: not searched."
    return f"Searching after {good}, at or before {bad}."


def _cost(finding: st.CulpritFinding) -> str:
    return " · ".join((_count(finding.rounds, "round"), _count(finding.builds, "build"), gpu_time(finding.gpu_seconds)))


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def fit(title: str, items: Sequence[str], most: int, more: Callable[[int], str]) -> dict[str, Any]:
    """TITLE and at most MOST of ITEMS as one section, only as many as fit Slack's
    SECTION_LIMIT (it refuses a longer one, and the message with it); the rest counted."""
    kept = list(items[:most])
    while True:
        rest = len(items) - len(kept)
        text = "\n".join([title, *kept, *([more(rest)] if rest else [])])
        if len(text) <= SECTION_LIMIT or not kept:
            return _section(text[:SECTION_LIMIT])
        kept.pop()


def evidence_line(entry: Mapping[str, Any], linked: bool) -> str:
    """One decisive set of runs: which step, which commit, its verdict, how many runs
    failed, and (LINKED and known) the task instance that ran them in the Airflow UI."""
    outcomes = [o for runs in (entry.get("runs") or {}).values() for o in runs]
    failed = sum(o in FAILED_OUTCOMES for o in outcomes)
    line = (f"• round {entry.get('round', '?')}, {escape(str(entry.get('mode', '?')))} "
            f"`{escape(str(entry.get('commit') or 'unknown')[:12])}`: {escape(str(entry.get('verdict', '?')))}, "
            f"{failed}/{len(outcomes)} failed")  # fmt: skip
    dag_id, run_id, task_id = (entry.get(k) for k in ("dag_id", "run_id", "task_id"))
    if linked and isinstance(dag_id, str) and isinstance(run_id, str) and isinstance(task_id, str):
        index = entry.get("map_index")
        url = log_url(dag_id, run_id, task_id, None, index if isinstance(index, int) else None)
        line += f" · <{url}|runs>"
    return line


def finding_message(
    finding: st.CulpritFinding, *, repository_url: str | None, run_url: str | None, ops_group_id: str | None
) -> dict[str, Any]:
    """The Slack message of FINDING: its suite, where it stands in words, the commit (for a
    culprit), what the search cost, the failing tests and the runs that decided it.
    REPOSITORY_URL: commits are linked when it is https; RUN_URL: the search's run in the
    Airflow UI, None when there is no UI to link to (then nothing links into it)."""
    repo = browsable(repository_url)
    title = f"*Culprit finder - {escape(finding.cell)}/{escape(finding.suite)}: {HEADLINES[finding.status]}*"
    lines = [title, _what(finding, repo), f"Night `{escape(finding.nightly_run_id)}` · {_cost(finding)}"]
    if run_url:
        lines.append(f"<{run_url}|View the search>")
    text = "\n".join(lines)
    blocks: list[dict[str, Any]] = [_section(text[:SECTION_LIMIT])]
    tests = [f"• `{escape(t)}`" for t in finding.tests]
    blocks.append(fit(f"*Failing tests ({len(tests)}):*", tests, MAX_TESTS, lambda n: f"… {n} more tests"))
    if finding.evidence:
        where = f" in <{run_url}|the search's run>" if run_url else ""
        runs = [evidence_line(e, run_url is not None) for e in finding.evidence]
        blocks.append(fit(f"*Evidence ({len(runs)}):*", runs, MAX_EVIDENCE, lambda n: f"… {n} more runs{where}"))
    if finding.status in CALL_OPS:
        mention = f"<!subteam^{ops_group_id}|@ops-support>" if ops_group_id else "@ops-support"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"cc {mention}"}]})
    return {"text": text, "blocks": blocks}


class CulpritReportOperator(BaseOperator):
    """Posts one finding of the culprit finder (named by the run's conf["finding"]) to
    Slack, under the night's message where it can; without a Slack connection, logs it."""

    ui_color = "#fbe9e7"

    def __init__(
        self,
        *,
        history_conn_id: str,
        slack_conn_id: str | None,
        channel: str | None,
        slack_retries: int,
        ops_group_id: str | None,
        nightly_store: ArtifactStore,
        repository_url: str | None,
        finding_task_id: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.finding_task_id = finding_task_id  # its XCom `finding` names the finding (else the conf does)
        self.history_conn_id = history_conn_id
        self.slack_conn_id = slack_conn_id
        self.channel = channel
        self.slack_retries = slack_retries  # Slack's own retries (429, 5xx), not the task's
        self.ops_group_id = ops_group_id
        self.nightly_store = nightly_store
        self.repository_url = repository_url

    def execute(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.errors import SlackError
        from include.nightly_ci.report.slack import post_to_slack

        dag_run = context["dag_run"]
        # A run by hand has its finding from its Params, not its conf: the step task says which.
        named = context["ti"].xcom_pull(task_ids=self.finding_task_id, key="finding") if self.finding_task_id else None
        finding = self._finding(finding_key({"finding": named} if named else dag_run.conf))
        message = finding_message(
            finding,
            repository_url=self.repository_url,
            run_url=run_url(dag_run.dag_id, dag_run.run_id),
            ops_group_id=self.ops_group_id,
        )
        out = {"status": finding.status, "culprit": finding.culprit, "posted": False, "thread_ts": None,
               "file": self._keep(finding)}  # fmt: skip
        if not self.slack_conn_id:
            shown = "\n\n".join(b["text"]["text"] for b in message["blocks"] if b["type"] == "section")
            self.log.info("No Slack connection: the finding's message, not posted:\n%s", shown)
            return out
        thread = self._night_thread(finding.nightly_run_id) if self.channel else None
        try:
            post_to_slack(self.slack_conn_id, self.channel, message, self.slack_retries, thread_ts=thread)
        except SlackError:
            self.log.error("The finding of %s/%s is saved in the history store (the triage page shows it);"
                           " only its Slack message was refused", finding.cell, finding.suite)  # fmt: skip
            raise
        self.log.info("Posted the finding of %s/%s (%s) to Slack%s", finding.cell, finding.suite, finding.status,
                      f" in the thread of the night's message {thread}" if thread else "")  # fmt: skip
        return {**out, "posted": True, "thread_ts": thread}

    def _keep(self, finding: st.CulpritFinding) -> str | None:
        """The finding beside its night's results (RUN/culprit/CELL.SUITE.json); a store that
        refuses is told, not fatal: the history store holds it."""
        from dataclasses import asdict

        from include.nightly_ci.artifacts import write_json
        from include.nightly_ci.errors import StoreError
        from include.nightly_ci.names import tag_safe_run_id

        key = f"{tag_safe_run_id(finding.nightly_run_id)}/culprit/{finding.cell}.{finding.suite}.json"
        try:
            return write_json(self.nightly_store.root(), key, asdict(finding))
        except StoreError as exc:
            self.log.warning("The finding is not beside its night's results: %s", exc)
            return None

    def _finding(self, key: Mapping[str, str]) -> st.CulpritFinding:
        from include.nightly_ci.errors import FindingMissing
        from include.nightly_ci.history.store import HistoryStore

        store = HistoryStore.from_connection(self.history_conn_id)
        try:
            found = st.load(store, key["dag_id"], key["nightly_run_id"])
        finally:
            store.close()
        for finding in found:
            if (finding.cell, finding.suite) == (key["cell"], key["suite"]):
                return finding
        others = ", ".join(f"{f.cell}/{f.suite}" for f in found) or "none"
        raise FindingMissing(
            f"no finding of {key['cell']}/{key['suite']} of night {key['nightly_run_id']} of {key['dag_id']} in the"
            f" history store of connection {self.history_conn_id!r} (that night's findings: {others}): the culprit"
            " DAG saves a finding before it reports it"
        )

    def _night_thread(self, nightly_run_id: str) -> str | None:
        """The ts of the night's message, when the night posted it through the API to this
        channel; else None: the finding is then posted on its own, never not at all."""
        from include.nightly_ci.names import SLACK_THREAD

        path = self.nightly_store.run_folder(nightly_run_id) / SLACK_THREAD
        try:
            saved = json.loads(path.read_text())
        except Exception as exc:  # every store has its own error types (fsspec, botocore, azure)
            if isinstance(exc, FileNotFoundError):
                self.log.info("The night left no Slack thread (%s): posting on its own", path)
            else:
                self.log.warning("Could not read the night's Slack thread %s (%s: %s): posting on its own",
                                 path, type(exc).__name__, str(exc)[:300])  # fmt: skip
            return None
        if not isinstance(saved, dict) or saved.get("channel") != self.channel or not isinstance(saved.get("ts"), str):
            self.log.info("The night's message is not in %s (%s): posting on its own", self.channel, saved)
            return None
        return str(saved["ts"])


def finding_key(conf: Mapping[str, Any] | None) -> dict[str, str]:
    """The finding a run reports, from its conf: {"finding": {dag_id, nightly_run_id, cell, suite, ...}}."""
    from include.nightly_ci.errors import FindingMissing

    key = (conf or {}).get("finding")
    needed = ("dag_id", "nightly_run_id", "cell", "suite")
    if not isinstance(key, Mapping) or not all(isinstance(key.get(k), str) and key[k] for k in needed):
        raise FindingMissing(f"the run's conf names no finding: conf['finding'] needs {', '.join(needed)}; got {key!r}")
    return {k: key[k] for k in needed}
