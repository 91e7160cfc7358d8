#!/usr/bin/env bash
# `make up`: the Airflow UI on this machine (`airflow standalone`: api-server on :8080,
# scheduler, dag-processor, triggerer) with the project's dags/, plugins/ and include/,
# its pools and the local connections. The login is printed once it is up.
set -euo pipefail
# shellcheck source=scripts/prepare.sh
source "$(dirname "$0")/prepare.sh"
export AIRFLOW__API__BASE_URL=${AIRFLOW__API__BASE_URL:-http://localhost:8080}
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
(
  for _ in $(seq 1 120); do
    if curl -sf http://127.0.0.1:8080/api/v2/version >/dev/null; then
      echo "[up] the UI is at $AIRFLOW__API__BASE_URL; login: admin / $(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated" 2>/dev/null || echo 'see the standalone output')"
      exit 0
    fi
    sleep 2
  done
) &
exec airflow standalone
