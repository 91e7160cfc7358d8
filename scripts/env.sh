# shellcheck shell=bash
# Shared settings of the local setup, sourced by the scripts and the Makefile's shell.
# Machine-wide state lives outside the clone so that a fresh clone reuses it. The setup
# runs a Docker engine of its own (data, exec root, socket and pid file under
# $STATE/engine): DOCKER_HOST points every client at it, and no other engine of the
# machine is ever used, stopped or emptied.
if [ "$(id -u)" = 0 ]; then STATE=${NIGHTLY_CI_STATE:-/var/lib/nightly-ci}; else STATE=${NIGHTLY_CI_STATE:-$HOME/.cache/nightly-ci}; fi
VENV=${NIGHTLY_CI_VENV:-$STATE/venv}
# Debian's python3 (3.11.2 on Debian 12), never whatever comes first on PATH (a pyenv's
# newer one would hide pins that Debian's cannot install): the venv is made from it.
SYSTEM_PYTHON=/usr/bin/python3
# The venv's Python once it is complete (provisioning stamps it last); before that the
# system's, which only the standard-library helpers run with.
if [ -s "$VENV/.requirements.sha256" ] && [ -x "$VENV/bin/python" ]; then PYTHON=$VENV/bin/python; else PYTHON=$SYSTEM_PYTHON; fi
# Debian's docker.io CLI (20.10): BuildKit built in. Never a bare `docker`: before docker.io
# is installed that would be whatever is first on PATH (or nothing).
DOCKER_CLI=${NIGHTLY_CI_DOCKER_CLI:-/usr/bin/docker}
ENGINE_DIR=$STATE/engine
DOCKER_HOST=unix://$ENGINE_DIR/docker.sock
BASE_IMAGE=${NIGHTLY_CI_BASE_IMAGE:-nightly-ci-base}
RUNTIME_BASE_IMAGE=${NIGHTLY_CI_RUNTIME_BASE_IMAGE:-nightly-ci-runtime}
ECR_PORT=${NIGHTLY_CI_ECR_PORT:-5101}
ACR_PORT=${NIGHTLY_CI_ACR_PORT:-5102}
SLACK_PORT=${NIGHTLY_CI_SLACK_PORT:-5103}
export STATE VENV SYSTEM_PYTHON PYTHON DOCKER_CLI ENGINE_DIR DOCKER_HOST BASE_IMAGE RUNTIME_BASE_IMAGE ECR_PORT ACR_PORT SLACK_PORT
