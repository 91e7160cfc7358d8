#!/usr/bin/env bash
# The README's first command on a bare Debian 12 machine: a minimal bookworm (debootstrap
# minbase: no python3, no docker, no git) as the machine's root, in a mount namespace of
# its own; there, as a new user would: `apt-get install git make`, clone, `make demo`,
# then `make down`. Prints how long each step took. Needs root and the machine's Debian
# mirror (read from its apt sources); the machine's Python package index settings are
# passed through, as the machine's own. Everything it makes is under one folder, which it
# removes at the end; every process left with that root is stopped first.
#
#   bash benchmarks/bare_debian.sh [make target after demo, e.g. test]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "[bare] needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
# shellcheck source=scripts/provision.sh
source "$ROOT/scripts/provision.sh"  # apt_mirror, free of side effects when sourced

WORK=$(mktemp -d /tmp/nci-bare.XXXXXX)
MACHINE=$WORK/root
EXTRA=${1:-}
log() { printf '[bare] %s\n' "$*"; }
T0=$(date +%s)
step() { local s; s=$(date +%s); "$@"; log "$1: $(( $(date +%s) - s )) s (total $(( $(date +%s) - T0 )) s)"; }

stop_machine_processes() {  # every process whose root is the bare machine (dockerd, registries, ...)
  local proc
  for proc in /proc/[0-9]*; do
    if [ "$(readlink "$proc/root" 2>/dev/null)" = "$MACHINE" ]; then kill -9 "${proc#/proc/}" 2>/dev/null || true; fi
  done
}

cleanup() {
  stop_machine_processes
  sleep 1
  # The namespace's mounts ended with it; anything still mounted under WORK is not removed.
  if grep -q " $WORK" /proc/self/mounts; then log "mounts left under $WORK: not removing it"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # stopped (CI interrupted): the cleanup above still runs

debootstrap_machine() {
  debootstrap --variant=minbase bookworm "$MACHINE" "$(apt_mirror)" >"$WORK/debootstrap.log" 2>&1
  cp /etc/resolv.conf "$MACHINE/etc/resolv.conf"  # the machine's resolver, to reach its mirror
  for bin in python3 docker git make; do
    if chroot "$MACHINE" sh -c "command -v $bin" >/dev/null; then log "not bare: $bin is there"; exit 1; fi
  done
}

# The session inside: mounts of its own, then the user's commands.
inside() {
  cat <<INSIDE
set -euo pipefail
# The root a mount point, as a machine's is (dockerd remounts / when it unpacks layers).
mount --bind "$MACHINE" "$MACHINE"
mount -t proc proc "$MACHINE/proc"
mount --rbind /sys "$MACHINE/sys"
mount --rbind /dev "$MACHINE/dev"
mount -t tmpfs tmpfs "$MACHINE/run"
mount -t tmpfs tmpfs "$MACHINE/tmp"
mkdir -p "$MACHINE/src"; mount --bind -o ro "$ROOT" "$MACHINE/src"
# The machine's Python package index settings, and the CA bundle they name aside (the
# bare machine's own ca-certificates package writes /etc/ssl/certs).
if [ -n "${PIP_CERT:-}" ]; then cp "${PIP_CERT:-}" "$MACHINE/opt/machine-ca.crt"; fi
for path in /etc/pip.conf /etc/xdg/pip /opt/pypi /opt/pypi-more /opt/wheels; do
  [ -e "\$path" ] || continue
  if [ -d "\$path" ]; then mkdir -p "$MACHINE\$path"; else mkdir -p "\$(dirname "$MACHINE\$path")"; touch "$MACHINE\$path"; fi
  mount --bind -o ro "\$path" "$MACHINE\$path"
done
chroot "$MACHINE" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  $(env | grep -E '^PIP_' | grep -v '^PIP_CERT=' | tr '\n' ' ') ${PIP_CERT:+PIP_CERT=/opt/machine-ca.crt} \
  NIGHTLY_CI_ECR_PORT=$(free_port) NIGHTLY_CI_ACR_PORT=$(free_port) NIGHTLY_CI_SLACK_PORT=$(free_port) \
  bash -euo pipefail -c '
    t() { local s=\$(date +%s); "\$@"; echo "[bare] \$*: \$(( \$(date +%s) - s )) s"; }
    t apt-get update -qq
    t apt-get install -y -q git make
    t git clone -q /src /root/nightly-ci
    cd /root/nightly-ci
    t make demo
    ${EXTRA:+t make $EXTRA}
    t make down
  '
INSIDE
}

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

run_inside() {
  unshare -m --propagation private bash -c "$(inside)" 2>&1 | tee "$WORK/run.log"
}

step debootstrap_machine
step run_inside
log "finished in $(( $(date +%s) - T0 )) s"
