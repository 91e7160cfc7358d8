#!/usr/bin/env bash
# `make lint` and CI: ruff (lint and format), mypy over the package and the tests,
# ShellCheck over the scripts, and the config's generated schema and tables up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
python -m mypy
shellcheck -x -P SCRIPTDIR -P . scripts/*.sh benchmarks/*.sh .ci/run
python -m include.nightly_ci schema --check
