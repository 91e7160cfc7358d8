#!/usr/bin/env bash
# `make down`: stop what the setup started (its Docker engine, the two registries, the
# stand-in Slack), by the pid files it wrote. Nothing else on the machine is touched.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

stop() {  # stop NAME PIDFILE
  local name=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || { echo "[down] $name: not started by the setup"; return; }
  pid=$(cat "$pidfile")
  if ! kill -0 "$pid" 2>/dev/null; then echo "[down] $name: not running"; rm -f "$pidfile"; return; fi
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { echo "[down] $name: stopped"; rm -f "$pidfile"; return; }; sleep 0.5; done
  echo "[down] $name (pid $pid) did not stop within 30 s" >&2
  return 1
}

stop "stand-in Slack" "$STATE/slack/server.pid"
stop "registry acr" "$STATE/registries/acr/registry.pid"
stop "registry ecr" "$STATE/registries/ecr/registry.pid"
stop "Docker engine ($DOCKER_HOST)" "$ENGINE_DIR/docker.pid"
