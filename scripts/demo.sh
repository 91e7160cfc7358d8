#!/usr/bin/env bash
# `make demo`: provision what is missing, then run one whole nightly of the local config
# through `airflow dags test` with a project-local AIRFLOW_HOME, and print what it pushed.
set -euo pipefail
source "$(dirname "$0")/prepare.sh"

LOGICAL_DATE=${LOGICAL_DATE:-$(date -u +%Y-%m-%dT%H:%M:%S+00:00)}
RUN_LOG="$ROOT/.local/demo-run.log"
echo "[demo] airflow dags test nightly_ci $LOGICAL_DATE (full log: $RUN_LOG)"
set +e
airflow dags test nightly_ci "$LOGICAL_DATE" ${DEMO_CONF:+-c "$DEMO_CONF"} >"$RUN_LOG" 2>&1
status=$?
set -e
RUN_ID=$(grep -oE "DagRun Finished: .*run_id=[^,]+" "$RUN_LOG" | tail -1 | sed -E 's/.*run_id=//')
[ -n "$RUN_ID" ] || { echo "[demo] the run did not finish; see $RUN_LOG" >&2; tail -30 "$RUN_LOG" >&2; exit 1; }
grep -qE "DagRun Finished: .*run_id=[^,]+.* state=success" "$RUN_LOG" || status=1
grep -E "DagRun Finished" "$RUN_LOG" | sed -E 's/.*(run_id=[^,]+).*(state=[a-z_]+).*/[demo] \1 \2/' || true
# How every task ended, by stage; anything not successful by name.
airflow tasks states-for-dag-run nightly_ci "$RUN_ID" -o json 2>/dev/null | python "$ROOT/scripts/run_states.py"
echo "[demo] artifacts (build logs and metrics, test output, JUnit, records): $ROOT/.local/artifacts"
echo "[demo] what the registries hold now:"
python -m include.nightly_ci inventory "$NIGHTLY_CI_CONFIG" || status=1
RESULTS="$ROOT/.local/artifacts/$(python -c 'import sys; from include.nightly_ci.names import tag_safe_run_id as t; print(t(sys.argv[1]))' "$RUN_ID")/results.md"
if [ -s "$RESULTS" ]; then echo "[demo] $RESULTS:"; cat "$RESULTS"; else echo "[demo] no results summary was written" >&2; status=1; fi
echo "[demo] the last message the (stand-in) Slack received:"
grep '/T0NIGHTLY/' "$STATE/slack/messages.jsonl" | tail -1 | python -c 'import json, sys; print(json.loads(sys.stdin.read())["body"]["text"])' || status=1
exit $status
