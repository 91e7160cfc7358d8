# shellcheck shell=bash
# Shared settings of the local setup, sourced by the scripts and the Makefile's shell.
# Machine-wide state lives outside the clone so that a fresh clone reuses it.
if [ "$(id -u)" = 0 ]; then STATE=${NIGHTLY_CI_STATE:-/var/lib/nightly-ci}; else STATE=${NIGHTLY_CI_STATE:-$HOME/.cache/nightly-ci}; fi
VENV=${NIGHTLY_CI_VENV:-$STATE/venv}
PYTHON=${PYTHON:-$VENV/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}
[ -x "$DOCKER_CLI" ] || DOCKER_CLI=docker
BASE_IMAGE=${NIGHTLY_CI_BASE_IMAGE:-nightly-ci-base}
ECR_PORT=${NIGHTLY_CI_ECR_PORT:-5101}
ACR_PORT=${NIGHTLY_CI_ACR_PORT:-5102}
SLACK_PORT=${NIGHTLY_CI_SLACK_PORT:-5103}
export STATE VENV PYTHON DOCKER_CLI BASE_IMAGE ECR_PORT ACR_PORT SLACK_PORT
