# shellcheck shell=bash
# Sourced by up.sh: provision what is missing, then get the local Airflow
# ready for the config: a valid config, the sample repository, a migrated database and
# the pools. Leaves the environment of local_env.sh set and the project root as cwd.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/provision.sh"
# shellcheck source=scripts/local_env.sh
source "$ROOT/scripts/local_env.sh"
cd "$ROOT" || exit 1
python -m include.nightly_ci check "$NIGHTLY_CI_CONFIG"
python -m dev.sample_repo "$ROOT/.local/sample-project.git"
airflow db migrate >"$ROOT/.local/db-migrate.log" 2>&1 || { tail -20 "$ROOT/.local/db-migrate.log"; exit 1; }
python -m include.nightly_ci pools "$NIGHTLY_CI_CONFIG"
