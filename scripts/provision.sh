#!/usr/bin/env bash
# Installs and starts what the local nightly needs, reusing whatever it made before:
# a Docker engine of its own (never another engine of the machine), qemu for the other
# arch, base images made locally with debootstrap, two registries with htpasswd auth on
# loopback (standing in for ECR and ACR), a stand-in Slack, the Python environment, and
# Postgres and Redis for the system test (installed only; the test starts its own), and
# Chromium for the triage page's browser test (headless, loopback only).
# Idempotent: a second run only checks. Nothing is pulled from any public registry.
#
#   provision.sh            install and start what is missing
#   provision.sh --check    say what is missing, change nothing (exit 1 if anything is)
#
# What it starts runs in a session of its own (Ctrl-C on `make test` stops the command,
# not the engine); `make down` stops it. Something that fails half-way leaves nothing a
# later run would trust: the venv, rootfs tarballs and images get their final names last.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

log() { printf '[provision] %s\n' "$*"; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
started() { log "$1 ($(( $(date +%s) - STEP_START )) s)"; }

# Only ever Debian's CLI, on the setup's own engine (DOCKER_HOST from env.sh).
docker() {
  [ -x "$DOCKER_CLI" ] || die "the docker CLI $DOCKER_CLI is not installed (apt-get install docker.io)"
  "$DOCKER_CLI" "$@"
}

# command:package pairs; the command tells whether the package is there.
PACKAGES=(
  git:git curl:curl /usr/bin/python3:python3 dockerd:docker.io docker-registry:docker-registry
  docker-compose:docker-compose htpasswd:apache2-utils debootstrap:debootstrap shellcheck:shellcheck
  update-binfmts:binfmt-support pg_ctlcluster:postgresql redis-server:redis-server ss:iproute2
  chromium:chromium
)
# Services these packages would start and enable at boot on a systemd host: the setup
# uses none of them (it starts its own engine, registries and databases on loopback).
SERVICES=(docker.service docker.socket containerd.service docker-registry.service postgresql.service redis-server.service)

host_arch() { dpkg --print-architecture; }
other_arch() { [ "$(host_arch)" = arm64 ] && echo amd64 || echo arm64; }
qemu_name() { [ "$1" = arm64 ] && echo aarch64 || echo x86_64; }

missing_packages() {
  local pair
  for pair in "${PACKAGES[@]}"; do command -v "${pair%%:*}" >/dev/null 2>&1 || printf '%s\n' "${pair#*:}"; done
  "$SYSTEM_PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || echo python3-venv
  command -v "qemu-$(qemu_name "$(other_arch)")-static" >/dev/null 2>&1 || echo qemu-user-static
}

ensure_packages() {
  local missing
  mapfile -t missing < <(missing_packages | sort -u)
  [ "${#missing[@]}" = 0 ] && return 0
  is_root || die "missing: ${missing[*]}; install them as root: apt-get install -y ${missing[*]}"
  log "installing ${missing[*]}"
  # On a systemd host, packages start their services at install: not these ones.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # ours: removed however apt ends (a failure, Ctrl-C)
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
  if [ "$made_policy" = 1 ]; then rm -f "$policy"; trap - EXIT; fi
  if [ -d /run/systemd/system ]; then
    local unit
    for unit in "${SERVICES[@]}"; do systemctl disable "$unit" >/dev/null 2>&1 || true; done
    log "left ${SERVICES[*]} disabled (the setup starts its own on loopback)"
  fi
}

engine_up() { [ -x "$DOCKER_CLI" ] && docker info >/dev/null 2>&1; }

ensure_docker() {
  if engine_up; then log "Docker engine: running ($DOCKER_HOST)"; return; fi
  is_root || die "the setup's Docker engine ($DOCKER_HOST) is not running and this is not root: run 'make demo' as root"
  mkdir -p "$ENGINE_DIR"
  log "starting the setup's own dockerd on $DOCKER_HOST (log: $ENGINE_DIR/dockerd.log)"
  setsid dockerd --data-root "$ENGINE_DIR/data" --exec-root "$ENGINE_DIR/exec" -H "$DOCKER_HOST" \
    --pidfile "$ENGINE_DIR/docker.pid" --iptables=false --ip6tables=false --bridge=none \
    --storage-driver=overlay2 >"$ENGINE_DIR/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do engine_up && { log "Docker engine: started"; return; }; sleep 1; done
  tail -20 "$ENGINE_DIR/dockerd.log" >&2
  die "dockerd did not start within 60 s"
}

ensure_binfmt() {  # qemu for the arch this host is not
  local q
  q=qemu-$(qemu_name "$(other_arch)")
  [ -e "/proc/sys/fs/binfmt_misc/$q" ] && grep -q enabled "/proc/sys/fs/binfmt_misc/$q" && return
  is_root || die "$(other_arch) emulation is not enabled; as root: mount binfmt_misc and update-binfmts --enable $q"
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable "$q" >/dev/null 2>&1 || update-binfmts --import "$q"
  log "$(other_arch) emulation: enabled"
}

apt_mirror() {  # the Debian mirror this machine's apt uses (never written into the repo)
  local m
  m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  case "$m" in
    mirror+file://*) m=$(grep -hE '^(https?|ftp)://' "${m#mirror+file://}" | awk '{print $1}' | head -1 || true) ;;
    mirror+http*) m=$(curl -fsS "${m#mirror+}" | grep -E '^(https?|ftp)://' | awk '{print $1}' | head -1 || true) ;;
  esac
  [ -n "$m" ] || die "no Debian mirror found in /etc/apt/sources.list* (mirror+file lists included)"
  echo "$m"
}

make_rootfs() {  # make_rootfs ARCH TARBALL: a minimal bookworm, built aside, named last
  local arch=$1 tarball=$2 dir
  dir=$(mktemp -d "$STATE/rootfs-$arch.XXXX")
  # shellcheck disable=SC2064  # the folder is known now
  trap "rm -rf '$dir' '$tarball.tmp'" EXIT
  local pkgs=python3,python3-pytest logfile="$STATE/debootstrap-$arch.log"
  log "debootstrap $arch base (a few minutes; log: $logfile)"
  if [ "$arch" = "$(host_arch)" ]; then
    debootstrap --arch="$arch" --variant=minbase --include=$pkgs bookworm "$dir" "$(apt_mirror)" >"$logfile" 2>&1
  else
    debootstrap --arch="$arch" --foreign --variant=minbase --include=$pkgs bookworm "$dir" "$(apt_mirror)" >"$logfile" 2>&1
    chroot "$dir" /debootstrap/debootstrap --second-stage >>"$logfile" 2>&1
  fi
  rm -rf "$dir"/usr/share/{doc,man,info,locale} "$dir"/var/cache/apt/* "$dir"/var/lib/apt/lists/*
  # Not this machine's name and resolver in every image (the engine sets both at run time).
  echo localhost >"$dir/etc/hostname"
  : >"$dir/etc/resolv.conf"
  tar -C "$dir" -c . | gzip -1 >"$tarball.tmp"
  mv "$tarball.tmp" "$tarball"
  rm -rf "$dir"
  trap - EXIT
}

# The version of what make_rootfs makes: tarballs and images of another version (an older
# provision.sh: the machine's host name and resolver inside) are made again.
ROOTFS_VERSION=2
ROOTFS_LABEL=dev.nightly-ci.rootfs

rootfs_current() {  # rootfs_current IMAGE: it exists and was made from this version's rootfs
  [ "$(docker image inspect -f "{{index .Config.Labels \"$ROOTFS_LABEL\"}}" "$1" 2>/dev/null)" = "$ROOTFS_VERSION" ]
}

import_image() {  # import_image ARCH NAME [docker import options...]: the tarball as NAME, arch fixed first
  local arch=$1 name=$2; shift 2
  local tarball="$STATE/rootfs-bookworm-$arch.v$ROOTFS_VERSION.tar.gz" staging="$name-importing"
  rm -f "$STATE/rootfs-bookworm-$arch.tar.gz"  # an older version's, never trusted
  [ -s "$tarball" ] || make_rootfs "$arch" "$tarball"
  log "importing $name"
  docker import --change "LABEL $ROOTFS_LABEL=$ROOTFS_VERSION" "$@" "$tarball" "$staging" >/dev/null
  # docker import records the engine's own architecture: rewrite it before the image gets its name.
  "$PYTHON" "$ROOT/scripts/set_image_arch.py" "$staging" "$arch"
  docker tag "$staging" "$name"
  docker rmi "$staging" >/dev/null
}

ensure_base_image() {  # ensure_base_image ARCH TAG...
  local arch=$1; shift
  local first="$BASE_IMAGE:$1"
  rootfs_current "$first" || import_image "$arch" "$first"
  for tag in "$@"; do docker tag "$first" "$BASE_IMAGE:$tag"; done
  log "base image $first ($(docker image inspect -f '{{.Architecture}}' "$first")): ${*}"
}

ensure_runtime_image() {  # ensure_runtime_image ARCH: the runtime stages' base (another image than the build base)
  local arch=$1 name="$RUNTIME_BASE_IMAGE:bookworm-$1"
  rootfs_current "$name" \
    || import_image "$arch" "$name" --change 'LABEL dev.nightly-ci.base=runtime' --change 'ENV NIGHTLY_CI_BASE=runtime'
  log "runtime base image $name ($(docker image inspect -f '{{.Architecture}}' "$name"))"
}

is_registry() {  # is_registry PORT: the port is a registry (its API header), not just anything
  curl -s -o /dev/null -D - "http://127.0.0.1:$1/v2/" 2>/dev/null | grep -qi '^docker-distribution-api-version: registry/2'
}

is_our_registry() {  # is_our_registry PORT DIR: that registry takes this state's credentials
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -K - "http://127.0.0.1:$1/v2/" 2>/dev/null <<<"user = \"ci:$(cat "$2/password")\"") || true
  [ "$code" = 200 ]
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_registry() {  # ensure_registry NAME PORT
  local name=$1 port=$2 dir="$STATE/registries/$1"
  mkdir -p "$dir/data"
  if [ ! -s "$dir/password" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$dir/password.tmp" && mv "$dir/password.tmp" "$dir/password")
  fi
  # Named last, as the password: a file an interrupted run left half written is never trusted.
  [ -s "$dir/htpasswd" ] || { htpasswd -Bbn ci "$(cat "$dir/password")" >"$dir/htpasswd.tmp" && mv "$dir/htpasswd.tmp" "$dir/htpasswd"; }
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
  if is_registry "$port"; then
    is_our_registry "$port" "$dir" && { log "registry $name: running on 127.0.0.1:$port"; return; }
    stop_stale "$dir/registry.pid" "$port"
  fi
  if is_registry "$port"; then
    die "127.0.0.1:$port is a registry that refuses this setup's credentials ($dir/password): another setup's (set NIGHTLY_CI_${name^^}_PORT)"
  fi
  port_taken "$port" && die "127.0.0.1:$port answers but is not a registry: another program has the port of registry $name (set NIGHTLY_CI_${name^^}_PORT)"
  setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
  echo $! >"$dir/registry.pid"
  for _ in $(seq 1 30); do
    is_registry "$port" && { log "registry $name: started on 127.0.0.1:$port"; return; }
    sleep 0.5
  done
  die "registry $name did not start; see $dir/registry.log"
}

# The stand-in answers its identity and its log file: this setup's, not another's.
is_fake_slack() { [ "$(curl -fsS "http://127.0.0.1:$SLACK_PORT/health" 2>/dev/null)" = "nightly-ci stand-in slack $(realpath -m "$STATE/slack/messages.jsonl")" ]; }

stop_stale() {  # stop_stale PIDFILE PORT: the server this setup started on PORT, which no longer answers as it should (an older version)
  local pid
  [ -s "$1" ] && pid=$(cat "$1") && kill -0 "$pid" 2>/dev/null || return 0
  ss -Hltnp "sport = :$2" | grep -q "pid=$pid," || return 0  # its process, but not on this port: leave it
  log "restarting the server of $1 (pid $pid)"
  kill "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  die "pid $pid of $1 did not stop"
}

ensure_fake_slack() {  # the demo's Slack: a webhook on loopback that records what it gets
  local dir="$STATE/slack"
  mkdir -p "$dir"
  if is_fake_slack; then log "stand-in Slack: running on 127.0.0.1:$SLACK_PORT"; return; fi
  stop_stale "$dir/server.pid" "$SLACK_PORT"
  port_taken "$SLACK_PORT" && die "127.0.0.1:$SLACK_PORT answers but is not this setup's stand-in Slack (set NIGHTLY_CI_SLACK_PORT)"
  setsid "$PYTHON" "$ROOT/dev/fake_slack.py" --port "$SLACK_PORT" --log "$dir/messages.jsonl" >"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$dir/server.pid"
  for _ in $(seq 1 30); do
    is_fake_slack && { log "stand-in Slack: started on 127.0.0.1:$SLACK_PORT (messages: $dir/messages.jsonl)"; return; }
    sleep 0.3
  done
  die "the stand-in Slack did not start; see $dir/server.log"
}

ensure_build_secrets() {  # the demo's stand-in for sccache's S3 keys (BuildKit secrets)
  local dir="$STATE/sccache"
  mkdir -p "$dir"
  [ -s "$dir/key-id" ] || (umask 077; printf 'AKIA%s' "$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Z0-9' | head -c 16)" >"$dir/key-id")
  [ -s "$dir/secret" ] || (umask 077; head -c 30 /dev/urandom | base64 | tr -d '/+=' >"$dir/secret")
}

ensure_venv() {  # trusted only once stamped, and the stamp is written last
  local stamp="$VENV/.requirements.sha256" want
  # The pins and the interpreter they were installed for: a venv of another Python (a
  # pyenv's, an older provision.sh's) is made again from Debian's.
  want=$( { "$SYSTEM_PYTHON" --version; cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt"; } | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "Python environment: $VENV"; return
  fi
  if [ -x "$VENV/bin/python" ] && [ -s "$stamp" ] && [ "$("$VENV/bin/python" --version)" = "$("$SYSTEM_PYTHON" --version)" ]; then
    log "updating the Python packages in $VENV"
  else
    log "installing Python packages into $VENV (about 3 minutes)"
    rm -rf "$VENV"  # what a failed earlier run left: never trusted, made again
    "$SYSTEM_PYTHON" -m venv "$VENV"
  fi
  rm -f "$stamp"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
  echo "$want" >"$stamp"
  PYTHON=$VENV/bin/python
}

check_only() {
  local missing
  missing=$(missing_packages | sort -u | tr '\n' ' ')
  [ -n "$missing" ] && log "missing packages: $missing"
  engine_up || log "the setup's Docker engine ($DOCKER_HOST) is not running"
  [ -s "$VENV/.requirements.sha256" ] || log "no Python environment in $VENV"
  if [ -n "$missing" ] || ! engine_up || [ ! -s "$VENV/.requirements.sha256" ]; then
    is_root || log "run as root to install and start them, or install: apt-get install -y $missing"
    exit 1
  fi
  log "nothing missing"
}

main() {
  [ "${1:-}" = --check ] && { check_only; return; }
  # Ctrl-C stops provisioning at once, at whatever step. Without this trap bash takes a
  # SIGINT that arrives while the command it waits for ends normally (one that handles
  # Ctrl-C itself and exits 0, or a short one that was ending anyway) as handled by that
  # command, and goes on to the next step: a Ctrl-C'd `make test` provisioned on and ran
  # its tests. `exit` runs the EXIT trap of a step that has one (make_rootfs's cleanup).
  trap 'log "interrupted"; exit 130' INT TERM
  mkdir -p "$STATE"
  local step
  for step in ensure_packages ensure_docker ensure_binfmt ensure_venv ensure_build_secrets; do
    STEP_START=$(date +%s); "$step"; [ $(( $(date +%s) - STEP_START )) -lt 5 ] || started "$step"
  done
  ensure_base_image "$(host_arch)" "bookworm-$(host_arch)"
  ensure_base_image "$(other_arch)" "bookworm-$(other_arch)"
  # The seed's arm64 overrides name these base tags (vllm, trtllm).
  docker tag "$BASE_IMAGE:bookworm-arm64" "$BASE_IMAGE:25.06-cuda12.9-devel-ubuntu24.04"
  docker tag "$BASE_IMAGE:bookworm-arm64" "$BASE_IMAGE:25.06-py3"
  ensure_runtime_image amd64
  ensure_runtime_image arm64
  ensure_registry ecr "$ECR_PORT"
  ensure_registry acr "$ACR_PORT"
  ensure_fake_slack
}

# Sourced (the tests call its functions one by one), it only defines them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
