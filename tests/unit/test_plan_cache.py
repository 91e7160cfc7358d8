"""The plan kept between parses (plan/cache.py): used only while nothing it was made from
changed, never for a bad config, never from a folder others may write to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from include.nightly_ci.config import ConfigError, loader
from include.nightly_ci.plan import cache, load_plan

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "config" / "nightly_ci.yaml"


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    kept = tmp_path / "plans"
    monkeypatch.setenv(cache.CACHE_ENV, str(kept))
    return kept


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pickle"))


def unvalidated(monkeypatch) -> None:
    """From here on, a plan that is not the kept one fails the test."""

    def refuse(path):
        raise AssertionError(f"{path} was read and validated again")

    monkeypatch.setattr(loader, "read_config", refuse)


def test_a_second_parse_takes_the_kept_plan_without_validating(folder, tmp_path, monkeypatch):
    config = tmp_path / "nightly.yaml"
    config.write_text(f"extends: {SHIPPED}\ndag: {{dag_id: kept_nightly}}\n")
    first = load_plan(str(config))
    assert len(entries(folder)) == 1 and (folder.stat().st_mode & 0o777) == 0o700
    unvalidated(monkeypatch)
    assert load_plan(str(config)) == first
    assert first.dag_id == "kept_nightly"


def test_an_edit_of_the_config_or_of_a_file_it_extends_is_seen(folder, tmp_path, monkeypatch):
    base, top = tmp_path / "base.yaml", tmp_path / "nightly.yaml"
    base.write_text(f"extends: {SHIPPED}\ndag: {{dag_id: first_id}}\n")
    top.write_text("extends: base.yaml\n")
    assert load_plan(str(top)).dag_id == "first_id"
    base.write_text(f"extends: {SHIPPED}\ndag: {{dag_id: second_id}}\n")  # the extended file only
    assert load_plan(str(top)).dag_id == "second_id"
    top.write_text("extends: base.yaml\ndag: {schedule: '0 3 * * *'}\n")
    plan = load_plan(str(top))
    assert (plan.dag_id, plan.schedule) == ("second_id", "0 3 * * *")
    monkeypatch.setenv(cache.CACHE_ENV, "off")  # made without the cache: the same plan
    assert load_plan(str(top)) == plan


def test_a_bad_config_is_refused_at_every_parse_and_never_kept(folder, tmp_path):
    config = tmp_path / "nightly.yaml"
    config.write_text(f"extends: {SHIPPED}\ndag: {{dag_id: Not-A-Name}}\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"dag\.dag_id"):
            load_plan(str(config))
    assert entries(folder) == []
    config.write_bytes(b"dag: {dag_id: \xff}\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_plan(str(config))


@pytest.mark.parametrize("how", ["others may write", "off"])
def test_no_plan_is_kept_where_others_may_write_or_when_off(folder, tmp_path, monkeypatch, how):
    if how == "off":
        monkeypatch.setenv(cache.CACHE_ENV, "off")
    else:
        folder.mkdir(mode=0o700)
        folder.chmod(0o777)
    config = tmp_path / "nightly.yaml"
    config.write_text(f"extends: {SHIPPED}\n")
    assert load_plan(str(config)).dag_id == "nightly_ci"
    assert cache.cache_folder() is None
    assert not folder.exists() or entries(folder) == []


def test_a_torn_entry_or_a_change_of_code_makes_the_plan_again(folder, tmp_path, monkeypatch):
    config = tmp_path / "nightly.yaml"
    config.write_text(f"extends: {SHIPPED}\n")
    plan = load_plan(str(config))
    (entry,) = entries(folder)
    entry.write_bytes(entry.read_bytes()[:100])  # a parse killed mid-write leaves no such file; a disk may
    assert load_plan(str(config)) == plan
    assert entry.stat().st_size > 100  # written whole again
    monkeypatch.setattr(cache, "_code_key", lambda: b"the package's code changed")
    assert load_plan(str(config)) == plan
    assert len(entries(folder)) == 2
    unvalidated(monkeypatch)
    assert load_plan(str(config)) == plan


def test_the_oldest_entries_go_beyond_keep(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "KEEP", 2)
    written = []
    for n in range(3):
        config = tmp_path / f"nightly{n}.yaml"
        config.write_text(f"extends: {SHIPPED}\ndag: {{dag_id: nightly_{n}}}\n")
        before = set(entries(folder))
        load_plan(str(config))
        (new,) = set(entries(folder)) - before
        os.utime(new, (1_000_000 + n, 1_000_000 + n))  # written in this order, whatever the clock's resolution
        written.append(new)
    assert entries(folder) == sorted(written[1:])
    assert not list(folder.glob(".*.tmp"))
