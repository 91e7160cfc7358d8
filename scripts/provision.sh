#!/usr/bin/env bash
# Installs and starts what the local nightly needs, reusing whatever is already there:
# Docker engine, qemu for arm64, locally made base images, two registries with htpasswd
# auth on loopback (standing in for ECR and ACR), the Python environment, and Postgres
# and Redis for the system test (installed only; the test starts its own).
# Idempotent: a second run only checks. Nothing is pulled from any public registry.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

log() { printf '[provision] %s\n' "$*"; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

APT_UPDATED=0
apt_install() {  # apt_install CMD PACKAGE...: install PACKAGEs unless CMD exists
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  is_root || die "'$cmd' is missing; install it as root: apt-get install -y $*"
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Debian's docker CLI (20.10) ships with the engine; prefer it over a newer client
# without buildx that may sit first on PATH.
docker() { "$DOCKER_CLI" "$@"; }

ensure_packages() {
  apt_install git git
  apt_install curl curl
  apt_install dockerd docker.io
  apt_install docker-registry docker-registry
  apt_install docker-compose docker-compose
  apt_install htpasswd apache2-utils
  apt_install debootstrap debootstrap
  apt_install shellcheck shellcheck  # make lint and CI
  apt_install qemu-aarch64-static qemu-user-static binfmt-support
  apt_install update-binfmts binfmt-support
  # The system test's metadata database and Celery broker (started by the test itself).
  apt_install pg_ctlcluster postgresql
  apt_install redis-server redis-server
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then log "Docker engine: running"; return; fi
  is_root || die "no Docker engine answers and this is not root: start Docker (or run 'make demo' as root)"
  log "starting dockerd (log: $STATE/dockerd.log)"
  mkdir -p "$STATE"
  nohup dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
    >"$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && { log "Docker engine: started"; return; }; sleep 1; done
  tail -20 "$STATE/dockerd.log" >&2
  die "dockerd did not start within 60 s"
}

ensure_binfmt() {
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 && return
  is_root || die "arm64 emulation is not enabled; as root: mount binfmt_misc and update-binfmts --enable qemu-aarch64"
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || update-binfmts --import qemu-aarch64
  log "arm64 emulation: enabled"
}

apt_mirror() {  # the Debian mirror this machine's apt uses (never written into the repo)
  local m
  m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$m" ] || die "no Debian mirror found in /etc/apt/sources.list*"
  echo "$m"
}

make_rootfs() {  # make_rootfs ARCH TARBALL
  local arch=$1 tarball=$2 dir
  dir=$(mktemp -d "$STATE/rootfs-$arch.XXXX")
  local pkgs=python3,python3-pytest
  log "debootstrap $arch base (a few minutes; log: $STATE/debootstrap-$arch.log)"
  if [ "$arch" = amd64 ]; then
    debootstrap --variant=minbase --include=$pkgs bookworm "$dir" "$(apt_mirror)" >"$STATE/debootstrap-$arch.log" 2>&1
  else
    debootstrap --arch="$arch" --foreign --variant=minbase --include=$pkgs bookworm "$dir" "$(apt_mirror)" >"$STATE/debootstrap-$arch.log" 2>&1
    chroot "$dir" /debootstrap/debootstrap --second-stage >>"$STATE/debootstrap-$arch.log" 2>&1
  fi
  rm -rf "$dir"/usr/share/{doc,man,info,locale} "$dir"/var/cache/apt/* "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | gzip -1 >"$tarball.tmp" && mv "$tarball.tmp" "$tarball"
  rm -rf "$dir"
}

ensure_base_image() {  # ensure_base_image ARCH TAG...
  local arch=$1; shift
  local first="$BASE_IMAGE:$1"
  if ! docker image inspect "$first" >/dev/null 2>&1; then
    local tarball="$STATE/rootfs-bookworm-$arch.tar.gz"
    [ -s "$tarball" ] || make_rootfs "$arch" "$tarball"
    log "importing $first"
    docker import "$tarball" "$first" >/dev/null
    # docker import records the engine's own architecture: rewrite it in the image config.
    "$PYTHON" "$ROOT/scripts/set_image_arch.py" "$first" "$arch"
  fi
  for tag in "$@"; do docker tag "$first" "$BASE_IMAGE:$tag"; done
  log "base image $first ($(docker image inspect -f '{{.Architecture}}' "$first")): ${*}"
}

ensure_runtime_image() {  # ensure_runtime_image ARCH: the runtime stages' base (another image than the build base)
  local arch=$1 name="nightly-ci-runtime:bookworm-$1"
  if ! docker image inspect "$name" >/dev/null 2>&1; then
    log "importing $name"
    docker import --change 'LABEL dev.nightly-ci.base=runtime' --change 'ENV NIGHTLY_CI_BASE=runtime' \
      "$STATE/rootfs-bookworm-$arch.tar.gz" "$name" >/dev/null
    "$PYTHON" "$ROOT/scripts/set_image_arch.py" "$name" "$arch"
  fi
  log "runtime base image $name ($(docker image inspect -f '{{.Architecture}}' "$name"))"
}

ensure_registry() {  # ensure_registry NAME PORT
  local name=$1 port=$2 dir="$STATE/registries/$1"
  mkdir -p "$dir/data"
  if [ ! -s "$dir/password" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$dir/password")
  fi
  [ -s "$dir/htpasswd" ] || htpasswd -Bbn ci "$(cat "$dir/password")" >"$dir/htpasswd"
  cat >"$dir/config.yml" <<CFG
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port}
auth:
  htpasswd: {realm: nightly-ci-$name, path: $dir/htpasswd}
CFG
  if curl -s -o /dev/null "http://127.0.0.1:$port/v2/"; then log "registry $name: running on 127.0.0.1:$port"; return; fi
  nohup docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  for _ in $(seq 1 30); do
    curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && { log "registry $name: started on 127.0.0.1:$port"; return; }
    sleep 0.5
  done
  die "registry $name did not start; see $dir/registry.log"
}

ensure_build_secrets() {  # the demo's stand-in for sccache's S3 keys (BuildKit secrets)
  local dir="$STATE/sccache"
  mkdir -p "$dir"
  [ -s "$dir/key-id" ] || (umask 077; printf 'AKIA%s' "$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Z0-9' | head -c 16)" >"$dir/key-id")
  [ -s "$dir/secret" ] || (umask 077; head -c 30 /dev/urandom | base64 | tr -d '/+=' >"$dir/secret")
}

ensure_fake_slack() {  # the demo's Slack: a webhook on loopback that records what it gets
  local dir="$STATE/slack"
  mkdir -p "$dir"
  if curl -s -o /dev/null -X POST "http://127.0.0.1:$SLACK_PORT/services/ping"; then log "fake Slack: running on 127.0.0.1:$SLACK_PORT"; return; fi
  nohup python3 "$ROOT/dev/fake_slack.py" --port "$SLACK_PORT" --log "$dir/messages.jsonl" >"$dir/server.log" 2>&1 &
  for _ in $(seq 1 30); do
    curl -s -o /dev/null -X POST "http://127.0.0.1:$SLACK_PORT/services/ping" && { log "fake Slack: started on 127.0.0.1:$SLACK_PORT (messages: $dir/messages.jsonl)"; return; }
    sleep 0.3
  done
  die "the fake Slack did not start; see $dir/server.log"
}

ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "Python environment: $VENV"; return
  fi
  log "installing Python packages into $VENV (about 3 minutes)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
  echo "$want" >"$stamp"
}

main() {
  mkdir -p "$STATE"
  ensure_packages
  ensure_docker
  ensure_binfmt
  ensure_venv
  ensure_base_image amd64 bookworm-amd64
  ensure_base_image arm64 bookworm-arm64 25.06-cuda12.9-devel-ubuntu24.04 25.06-py3
  ensure_runtime_image amd64
  ensure_runtime_image arm64
  ensure_registry ecr "$ECR_PORT"
  ensure_registry acr "$ACR_PORT"
  ensure_fake_slack
  ensure_build_secrets
}

main "$@"
