"""The tree says what the code is: stages meet only through the shared modules, the
shared modules import no stage, and no module grows past about 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.services import ROOT

PACKAGE = ROOT / "include" / "nightly_ci"
PREFIX = "include.nightly_ci."
STAGES = {"build", "suites", "report", "retention", "culprit"}
# Shared by the stages; import no stage themselves, and of each other only what is listed.
SUPPORT = {"images": {"ui"}, "ui": {"history"}, "history": set()}
# Put the stages together (deadline: a re-export; worker_preload: what the tasks import, for workers to load once).
COMPOSERS = {"dag", "culprit_dag", "cli", "deadline", "__main__", "worker_preload"}
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def part(module: str) -> str:
    """The package part a module name belongs to: 'build', 'plan', 'names', ..."""
    return module.removeprefix(PREFIX).split(".")[0]


def imports(path: Path) -> set[str]:
    """Every include.nightly_ci module PATH imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(PREFIX)}
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_stages_meet_only_through_the_shared_modules(path):
    mine = part(module_name(path))
    used = {part(m) for m in imports(path)} - {mine}
    if mine in COMPOSERS:
        return
    if mine in STAGES:
        assert used & STAGES == set(), f"stage {mine!r} imports another stage: {used & STAGES}"
    else:  # the shared root modules, config, images, ui
        assert used & (STAGES | COMPOSERS) == set(), f"{mine!r} imports a stage or a composer: {used}"
    if mine == "config":
        assert used <= {"names", "errors"}, f"config comes first; it imports {used}"
    if mine in SUPPORT:
        assert used & set(SUPPORT) <= SUPPORT[mine], f"{mine!r} may use only {SUPPORT[mine]} of {set(SUPPORT)}: {used}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_about_400_lines(path):
    assert len(path.read_text().splitlines()) <= 420


def test_the_layout_is_the_documented_one():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == {
        "config",
        "plan",
        "images",
        "build",
        "suites",
        "report",
        "retention",
        "ui",
        "cli",
        "history",
        "culprit",
    }
    roots = {p.stem for p in PACKAGE.glob("*.py")}
    assert {"names", "records", "artifacts", "errors", "dag"} <= roots
