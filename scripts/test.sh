#!/usr/bin/env bash
# `make test`: provision (idempotent), then every test, on several pytest-xdist workers:
# most tests wait (on builds, registries, Airflow), so more workers than cores. Tests that
# share something run on one worker, one after another (tests/conftest.py: groups).
#   NIGHTLY_CI_TEST_WORKERS=N   how many workers (default 4, measured on 2 cores; 0: none)
# Extra args go to pytest.
set -euo pipefail
trap 'exit 130' INT TERM  # Ctrl-C stops it between commands too (scripts/provision.sh says why)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/provision.sh"
source "$ROOT/scripts/local_env.sh"
cd "$ROOT"
workers=${NIGHTLY_CI_TEST_WORKERS:-4}
if [ "$workers" = 0 ]; then
  exec python -m pytest "$@"
fi
exec python -m pytest -n "$workers" --dist loadscope --no-loadscope-reorder "$@"
