#!/usr/bin/env bash
# `make test`: provision (idempotent), then every test. Extra args go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/provision.sh"
source "$ROOT/scripts/local_env.sh"
cd "$ROOT"
python -m pytest "$@"
