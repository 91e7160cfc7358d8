"""What a fresh Debian 12 machine meets first (AUDIT-RELIABILITY.md H9, L6-L11): the
provisioning functions are sourced from scripts/provision.sh and run one by one, on the
machine's own tools (Debian's python3, its mount namespaces) and the setup's engine."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.services import ENGINE, STATE

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and the engine need root")
DEBIAN_PYTHON = "/usr/bin/python3"  # Debian 12's: 3.11.2, what provisioning runs before the venv


def provision_functions(script: str, *, state: Path, env: dict[str, str] | None = None, **kw):
    """Runs SCRIPT in bash after sourcing provision.sh with NIGHTLY_CI_STATE=STATE."""
    full_env = {**os.environ, "NIGHTLY_CI_STATE": str(state), **(env or {})}
    full_env.pop("NIGHTLY_CI_VENV", None)
    return subprocess.run(
        ["bash", "-c", f'source "{ROOT}/scripts/provision.sh"\n{script}'],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def sourced(script: str, variable: str, env: dict[str, str]) -> str:
    """VARIABLE's value after sourcing scripts/SCRIPT in bash with ENV."""
    out = subprocess.run(
        ["bash", "-c", f'source "{ROOT}/scripts/{script}"; echo "${variable}"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


MIRROR = "http://mirror.invalid/debian"  # never a real mirror's name in the repository

SOURCES = {
    "deb822": {"sources.list.d/debian.sources": f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\n"},
    "deb822 mirror+file": {
        "sources.list.d/debian.sources": (
            "Types: deb\nURIs: mirror+file:///etc/apt/mirrors/debian.list\nSuites: bookworm\n\n"
            "Types: deb\nURIs: mirror+file:///etc/apt/mirrors/debian-security.list\nSuites: bookworm-security\n"
        ),
        "mirrors/debian.list": f"{MIRROR}\tpriority:1\n",
        "mirrors/debian-security.list": "http://security.invalid/debian-security\n",
    },
    "one-line": {"sources.list": f"# a comment\ndeb {MIRROR} bookworm main\n"},
}


def apt_mirror_with(apt: Path, state: Path) -> subprocess.CompletedProcess:
    """provision.sh's apt_mirror with APT as /etc/apt, in a mount namespace of its own."""
    script = f'mount --bind "{apt}" /etc/apt && source "{ROOT}/scripts/provision.sh" && apt_mirror'
    env = {**os.environ, "NIGHTLY_CI_STATE": str(state)}
    return subprocess.run(["unshare", "-m", "bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)


@needs_root
@pytest.mark.parametrize("form", sorted(SOURCES))
def test_the_mirror_is_read_from_apt_sources_of_every_form(form, tmp_path):
    """Debian 12 cloud images list `mirror+file:` sources, which debootstrap refuses (H9.3).
    The machine's /etc/apt is replaced, in a mount namespace of the test's own, by one of
    each form."""
    apt = tmp_path / "apt"
    for name, text in SOURCES[form].items():
        (apt / name).parent.mkdir(parents=True, exist_ok=True)
        (apt / name).write_text(text)
    (apt / "sources.list.d").mkdir(exist_ok=True)
    proc = apt_mirror_with(apt, tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == MIRROR


@needs_root
def test_no_mirror_in_apt_sources_is_a_clear_error(tmp_path):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    proc = apt_mirror_with(apt, tmp_path / "state")
    assert proc.returncode == 1
    assert "no Debian mirror found in /etc/apt/sources.list*" in proc.stderr


# debootstrap stands in: it records its arguments, half-fills the folder, then fails.
FAILING_DEBOOTSTRAP = """
debootstrap() {
  printf '%s\\n' "$*" >>"$STATE/debootstrap-args"
  local dir; dir=$(printf '%s\\n' "$@" | grep "^$STATE/rootfs-")
  mkdir -p "$dir/etc" && echo half >"$dir/etc/half-made"
  return 1
}
"""


@pytest.mark.parametrize(
    ("host", "arch", "foreign"),
    [("amd64", "amd64", False), ("amd64", "arm64", True), ("arm64", "amd64", True), ("arm64", "arm64", False)],
)
def test_a_failed_debootstrap_leaves_nothing_a_later_run_trusts_and_the_arch_is_always_named(
    host, arch, foreign, tmp_path
):
    """H9: each failure once left a rootfs folder behind; L6: on an arm64 host the "amd64"
    rootfs was debootstrapped without --arch, so it was native arm64."""
    state = tmp_path / "state"
    state.mkdir()
    tarball = state / f"rootfs-bookworm-{arch}.v2.tar.gz"
    script = f"dpkg() {{ echo {host}; }}\n{FAILING_DEBOOTSTRAP}\nmake_rootfs {arch} {tarball}"
    proc = provision_functions(script, state=state)
    assert proc.returncode != 0
    assert {p.name for p in state.iterdir()} == {"debootstrap-args", f"debootstrap-{arch}.log"}
    args = (state / "debootstrap-args").read_text().split()
    assert f"--arch={arch}" in args
    assert ("--foreign" in args) == foreign


@pytest.mark.parametrize(
    ("host", "other", "qemu"), [("amd64", "arm64", "qemu-aarch64"), ("arm64", "amd64", "qemu-x86_64")]
)
def test_the_emulated_arch_is_the_one_the_host_is_not(host, other, qemu, tmp_path):
    """L6: on an arm64 host provisioning enabled qemu-aarch64, which fails for the native arch."""
    proc = provision_functions(
        f'dpkg() {{ echo {host}; }}\necho "$(other_arch) qemu-$(qemu_name "$(other_arch)")"', state=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [other, qemu]


@needs_root
def test_an_image_whose_arch_fix_fails_never_gets_its_name_and_debian_12s_python_fixes_it(tmp_path, provisioned):
    """H9.2: the arch fix-up crashed on Debian 12's Python 3.11.2 after `docker import` had
    already named the image, and later runs trusted it as it was."""
    version = subprocess.run(
        [DEBIAN_PYTHON, "-c", "import sys; print(sys.version_info[:3])"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("(3, 11,"), f"{DEBIAN_PYTHON} is not Debian 12's Python: {version.stdout}"
    state = tmp_path / "state"
    (state / "rootfs").mkdir(parents=True)
    (state / "rootfs" / "hello").write_text("a rootfs of one file\n")
    subprocess.run(
        ["tar", "-C", str(state / "rootfs"), "-czf", str(state / "rootfs-bookworm-arm64.v2.tar.gz"), "."], check=True
    )
    image = f"nightly-ci-test-halfmade:{os.getpid()}"
    run = f"DOCKER_HOST={ENGINE}\nimport_image arm64 {image}"
    inspect = [
        "/usr/bin/docker",
        "-H",
        ENGINE,
        "image",
        "inspect",
        "-f",
        '{{.Architecture}}/{{.Variant}} {{index .Config.Labels "dev.nightly-ci.rootfs"}}',
    ]
    try:
        failed = provision_functions(f"PYTHON=/bin/false\n{run}", state=state)
        assert failed.returncode != 0
        assert subprocess.run([*inspect, image], capture_output=True).returncode != 0, "a half-made image got its name"

        fixed = provision_functions(f"PYTHON={DEBIAN_PYTHON}\n{run}", state=state)
        assert fixed.returncode == 0, fixed.stderr
        assert subprocess.run([*inspect, image], capture_output=True, text=True, check=True).stdout.split() == [
            "arm64/v8",
            "2",
        ]
    finally:
        subprocess.run(["/usr/bin/docker", "-H", ENGINE, "rmi", "-f", image, f"{image}-importing"], capture_output=True)


def test_a_venv_without_its_stamp_is_not_used(tmp_path):
    """H9.1: `python3 -m venv` without python3-venv left a half-made venv/bin/python, which
    the next run selected. The venv counts only once provisioning has stamped it."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(DEBIAN_PYTHON)

    def python() -> str:
        return sourced(
            "env.sh", "PYTHON", {**os.environ, "NIGHTLY_CI_STATE": str(tmp_path), "NIGHTLY_CI_VENV": str(venv)}
        )

    assert python() == DEBIAN_PYTHON
    (venv / ".requirements.sha256").write_text("0" * 64 + "\n")
    assert python() == str(venv / "bin" / "python")


def test_the_venv_is_made_from_debians_python():
    """A pyenv's newer python3 first on PATH once made the venv, and the lock pinned a
    package that Debian 12's 3.11.2 cannot install: the first `make demo` on a bare
    machine stopped in pip."""
    debian = subprocess.run(
        [DEBIAN_PYTHON, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
    )
    assert sys.prefix != sys.base_prefix, "the tests run outside the setup's venv"
    assert (sys.base_prefix, sys.version) == ("/usr", debian.stdout.strip())


def test_the_services_the_setup_started_listen_on_loopback_only(provisioned):
    """L7: nothing of the setup on a public interface. The engine has a Unix socket only."""
    pids = {
        path: path.read_text().strip()
        for path in [
            *STATE.glob("registries/*/registry.pid"),
            STATE / "slack" / "server.pid",
            STATE / "engine" / "docker.pid",
        ]
    }
    assert len(pids) == 4, pids
    sockets = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    for path, pid in pids.items():
        mine = [line.split()[3] for line in sockets if f"pid={pid}," in line]
        if path.name == "docker.pid":
            assert mine == [], f"the setup's engine listens on TCP: {mine}"
        else:
            assert mine and all(addr.startswith("127.0.0.1:") for addr in mine), (path, mine)


def test_an_inherited_production_config_is_not_what_the_local_setup_runs(tmp_path):
    """L11: with NIGHTLY_CI_CONFIG set to production's on an ops box, `make demo` ran a real
    nightly with publish on."""
    env = {**os.environ, "NIGHTLY_CI_CONFIG": "/etc/nightly-ci/production.yaml"}
    env.pop("NIGHTLY_CI_LOCAL_CONFIG", None)
    assert sourced("local_env.sh", "NIGHTLY_CI_CONFIG", env) == str(ROOT / "dev" / "local.yaml")


def test_the_sample_repo_maker_replaces_only_what_it_made(tmp_path):
    """L10: `make_repo(dest)` removed whatever DEST held (`.local` once)."""
    from dev.sample_repo import make_repo, nightly_history

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("someone's work\n")
    with pytest.raises(FileExistsError, match=r"is not a sample repository made by dev\.sample_repo: not replacing it"):
        make_repo(foreign, nightly_history(1, datetime.now(UTC)))
    assert (foreign / "keep.txt").read_text() == "someone's work\n"

    ours = tmp_path / "ours.git"
    first = make_repo(ours, nightly_history(1, datetime.now(UTC)))
    second = make_repo(ours, nightly_history(2, datetime.now(UTC)))  # its own: replaced
    assert len(second) == len(first) + 1 and not set(first) & set(second)
