# shellcheck shell=bash
# The environment of the local setup: project-local AIRFLOW_HOME, the local config, and
# the Airflow connections of the two loopback registries (passwords made by provision.sh).
# Sourced by scripts/demo.sh and the tests; prints nothing.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
export AIRFLOW_HOME=${NIGHTLY_CI_AIRFLOW_HOME:-$ROOT/.local/airflow}
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$ROOT/plugins
# Always the local config (or NIGHTLY_CI_LOCAL_CONFIG, one that extends it), never an
# inherited NIGHTLY_CI_CONFIG: on an ops box that one may be production's, and the demo
# would run a real nightly.
export NIGHTLY_CI_CONFIG=${NIGHTLY_CI_LOCAL_CONFIG:-$ROOT/dev/local.yaml}
# The plans of configs, kept between parses (include/nightly_ci/plan/cache.py): in the project.
export NIGHTLY_CI_PLAN_CACHE=${NIGHTLY_CI_PLAN_CACHE:-$ROOT/.local/plans}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
_registry_conn() {  # _registry_conn TYPE PORT NAME
  local pw; pw=$(cat "$STATE/registries/$3/password" 2>/dev/null || true)
  printf '{"conn_type": "%s", "host": "127.0.0.1:%s", "login": "ci", "password": "%s"}' "$1" "$2" "$pw"
}
AIRFLOW_CONN_NIGHTLY_CI_ECR=$(_registry_conn docker "$ECR_PORT" ecr)
AIRFLOW_CONN_NIGHTLY_CI_ACR=$(_registry_conn azure_container_registry "$ACR_PORT" acr)
export AIRFLOW_CONN_NIGHTLY_CI_ECR AIRFLOW_CONN_NIGHTLY_CI_ACR
# sccache's S3 keys in the real build: here a stand-in pair (made by provision.sh) that the
# sample's wheel_builder stage mounts as BuildKit secrets.
AIRFLOW_CONN_NIGHTLY_CI_SCCACHE=$(printf '{"conn_type": "aws", "login": "%s", "password": "%s"}' \
  "$(cat "$STATE/sccache/key-id" 2>/dev/null)" "$(cat "$STATE/sccache/secret" 2>/dev/null)")
export AIRFLOW_CONN_NIGHTLY_CI_SCCACHE
# The demo's Slack webhook (dev/fake_slack.py on loopback); in production the password
# of a slackwebhook connection is the real webhook URL.
export AIRFLOW_CONN_NIGHTLY_CI_SLACK="{\"conn_type\": \"slackwebhook\", \"password\": \"http://127.0.0.1:$SLACK_PORT/services/T0NIGHTLY/B0DEMO/demo\"}"
# The test history: an SQLite file beside the demo's artifacts (production: a postgres
# connection to a database of its own).
export AIRFLOW_CONN_NIGHTLY_CI_HISTORY="{\"conn_type\": \"sqlite\", \"host\": \"$ROOT/.local/history.db\"}"
export PATH=$VENV/bin:$PATH
