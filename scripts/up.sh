#!/usr/bin/env bash
# `make up`: the Airflow UI on this machine (`airflow standalone`: api-server, scheduler,
# dag-processor, triggerer) with the project's dags/ and plugins/, its pools and the local
# connections, served on loopback only. Before it starts, it says what the scheduler will
# run (each DAG paused or not: `python -m include.nightly_ci paused`). Once it answers, it
# prints the address and the file that holds the admin password (never the password
# itself); Airflow's own output goes to .local/up.log.
set -euo pipefail
# shellcheck source=scripts/prepare.sh
source "$(dirname "$0")/prepare.sh"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT=${AIRFLOW__API__PORT:-8080}
export AIRFLOW__API__BASE_URL=${AIRFLOW__API__BASE_URL:-http://localhost:$AIRFLOW__API__PORT}
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
# What the scheduler will run the moment it starts: a DAG is created paused only once, so
# a nightly unpaused in this database before (in an earlier `make up`'s UI) queues its
# latest night at once. Said before it starts, with how to pause it (issue 14).
python -m include.nightly_ci paused "$NIGHTLY_CI_CONFIG" | sed 's/^/[up] /'
PASSWORDS="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
(
  for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$AIRFLOW__API__PORT/api/v2/version" >/dev/null; then
      echo "[up] the UI is at $AIRFLOW__API__BASE_URL; login: admin, its password in $PASSWORDS"
      exit 0
    fi
    sleep 2
  done
  echo "[up] the UI did not answer within 240 s; see $ROOT/.local/up.log" >&2
) &
echo "[up] starting airflow standalone on 127.0.0.1:$AIRFLOW__API__PORT (its output: $ROOT/.local/up.log)"
exec airflow standalone >"$ROOT/.local/up.log" 2>&1
