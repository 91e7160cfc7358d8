#!/usr/bin/env bash
# `make check`: the contributors' fast loop, in under 2 minutes: lint (scripts/lint.sh),
# then the unit tests, the DAG's among them (no services: nothing is provisioned or
# started). `make test` still runs everything. Extra args go to pytest.
set -euo pipefail
trap 'exit 130' INT TERM  # Ctrl-C stops it between commands too (scripts/provision.sh says why)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/local_env.sh
source "$ROOT/scripts/local_env.sh"
cd "$ROOT"
if [ ! -s "$VENV/.requirements.sha256" ]; then
  echo "[check] no Python environment in $VENV: run 'make provision' (or 'make test') once first" >&2
  exit 1
fi
started=$(date +%s)
bash scripts/lint.sh
python -m pytest -q -p no:cacheprovider tests/unit "$@"
echo "[check] lint and unit tests passed in $(( $(date +%s) - started )) s"
