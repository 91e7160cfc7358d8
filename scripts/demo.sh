#!/usr/bin/env bash
# `make demo`: provision what is missing, then one whole nightly of the local config
# (dev/demo.py) with a project-local AIRFLOW_HOME. Extra args go to the demo program.
set -euo pipefail
trap 'exit 130' INT TERM  # Ctrl-C stops it between commands too (scripts/provision.sh says why)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/provision.sh"
# shellcheck source=scripts/local_env.sh
source "$ROOT/scripts/local_env.sh"
cd "$ROOT"
exec python -m dev.demo "$@"
