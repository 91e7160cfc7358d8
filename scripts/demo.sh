#!/usr/bin/env bash
# `make demo`: provision what is missing, then run one whole nightly of the local config
# through `airflow dags test` with a project-local AIRFLOW_HOME, and print what it pushed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/provision.sh"
source "$ROOT/scripts/local_env.sh"
cd "$ROOT"

python -m include.nightly_ci check "$NIGHTLY_CI_CONFIG"
python -m include.nightly_ci.sample_repo "$ROOT/.local/sample-project.git"
airflow db migrate >"$ROOT/.local/db-migrate.log" 2>&1 || { tail -20 "$ROOT/.local/db-migrate.log"; exit 1; }
python -m include.nightly_ci pools "$NIGHTLY_CI_CONFIG"

LOGICAL_DATE=${LOGICAL_DATE:-$(date -u +%Y-%m-%dT%H:%M:%S+00:00)}
RUN_LOG="$ROOT/.local/demo-run.log"
echo "[demo] airflow dags test nightly_ci $LOGICAL_DATE (full log: $RUN_LOG)"
set +e
airflow dags test nightly_ci "$LOGICAL_DATE" ${DEMO_CONF:+-c "$DEMO_CONF"} >"$RUN_LOG" 2>&1
status=$?
set -e
# One line per task: what ran and how it ended.
grep -E "\[DAG TEST\] end task|new_state=(failed|upstream_failed|skipped)" "$RUN_LOG" | sed -E 's/.*task_id=([^ ]+).*/  done \1/' | sort -u || true
grep -E "DagRun Finished" "$RUN_LOG" | sed -E 's/.*(run_id=[^,]+).*(state=[a-z_]+).*/[demo] \1 \2/' || true
echo "[demo] what the registries hold now:"
python -m include.nightly_ci inventory "$NIGHTLY_CI_CONFIG" || status=1
exit $status
