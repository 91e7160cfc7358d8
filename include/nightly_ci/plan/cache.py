"""The plan of a config, kept between parses.

A dag-processor parses the DAG file every 30 s, each time in a new process: reading the
YAML, validating it and expanding it into the plan cost a 40-cell parse a tenth of its
time, every time, for a config that changes a few times a month. The plan is kept in a
folder of the user's own, under a key of everything it was made from:

- the bytes of the config file, and of each file it extends (the entry holds their
  SHA-256, and each is read and compared again on every use);
- the package's code (every module's size and modification time), Python's and
  pydantic's versions.

Anything else is a miss, and a miss loads and validates as before. A config with an error
is never kept: its ConfigError is raised at every parse, as before. The folder is used only
when it belongs to the user and no one else may write to it: loading a pickle runs code.

NIGHTLY_CI_PLAN_CACHE: the folder (default: <temp dir>/nightly-ci-plans-<uid>); `off`: none.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from include.nightly_ci.plan.model import Plan

CACHE_ENV = "NIGHTLY_CI_PLAN_CACHE"
KEEP = 32  # entries: writing one removes the oldest beyond these
PACKAGE = Path(__file__).resolve().parents[1]
_FORMAT = b"nightly-ci plan 1\0"  # a change of the entry's layout changes every key

Sources = tuple[tuple[Path, str], ...]  # each file read, with the SHA-256 of its bytes


def cache_folder() -> Path | None:
    """The folder of kept plans, made if missing; None when it is off or not the user's alone."""
    value = os.environ.get(CACHE_ENV, "")
    if value == "off":
        return None
    folder = Path(value) if value else Path(tempfile.gettempdir()) / f"nightly-ci-plans-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None
    return folder


def _code_key() -> bytes:
    import pydantic

    h = hashlib.sha256(_FORMAT + sys.version.encode() + pydantic.VERSION.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(PACKAGE)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.digest()


def plan_of(path: Path, make: Callable[[Path], tuple[Plan, Sources]]) -> Plan:
    """The plan of the config PATH: the kept one when nothing it was made from changed,
    else MAKE's (kept for the next parse)."""
    folder = cache_folder()
    try:
        top = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        folder = None  # MAKE says what is wrong with the file
    if folder is None:
        return make(path)[0]
    entry = folder / (hashlib.sha256(_code_key() + os.fsencode(path) + b"\0" + top.encode()).hexdigest() + ".pickle")
    kept = _read(entry)
    if kept is not None:
        return kept
    plan, sources = make(path)
    if sources[0][1] == top:  # the file did not change while it was read
        _write(entry, sources, plan)
    return plan


def _read(entry: Path) -> Plan | None:
    try:
        with entry.open("rb") as f:
            sources, plan = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:  # a torn or older entry: the plan is made again and the entry replaced
        return None
    for path, digest in sources[1:]:  # the first file's bytes are in the key
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                return None
        except OSError:
            return None
    return plan if isinstance(plan, Plan) else None


def _write(entry: Path, sources: Sources, plan: Plan) -> None:
    """ENTRY, whole or not at all (parses in other processes read it at any time)."""
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump((sources, plan), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, entry)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        return  # a full disk (or a plan that cannot be kept) makes the next parse a miss, nothing worse
    finally:
        Path(tmp).unlink(missing_ok=True)
    entries = sorted(entry.parent.glob("*.pickle"), key=_mtime, reverse=True)
    for old in entries[KEEP:]:
        old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0  # removed meanwhile by another parse's pruning
