"""Loading a config file: YAML with line numbers, `extends` chains with `!replace`, then
the model and the checks. Every problem is collected (not only the first) and reported
with the YAML path of the fault and its line, so that one bad edit gives one clear error.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from include.nightly_ci.config.checks import semantic_findings
from include.nightly_ci.config.files import PROJECT_ROOT, config_path
from include.nightly_ci.config.schema import NightlyConfig
from include.nightly_ci.errors import ConfigError, Finding


class _LineMap:
    """YAML path -> line number, and duplicate keys, from the composed node tree."""

    def __init__(self, node: yaml.Node | None, label: str = ""):
        self.label = label
        self.lines: dict[tuple[str, ...], int] = {}
        self.duplicates: list[Finding] = []
        self._walked: set[int] = set()
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[str, ...]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self._walked:  # an alias: its lines are those of its anchor
            return
        self._walked.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                k = str(key.value)
                if k in seen:
                    self.duplicates.append(
                        Finding(".".join((*path, k)), "duplicate key", f"line {key.start_mark.line + 1}")
                    )
                seen.add(k)
                self.lines[(*path, k)] = key.start_mark.line + 1
                self._walk(value, (*path, k))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, str(i)))

    def line_of(self, path: tuple[str, ...]) -> str | None:
        while path:
            if path in self.lines:
                return f"{self.label}line {self.lines[path]}"
            path = path[:-1]
        return None


def _line_in(maps: list[_LineMap], path: str | tuple[str, ...]) -> str | None:
    parts = tuple(path.split(".")) if isinstance(path, str) else path
    return next((m.line_of(parts) for m in maps if m.line_of(parts)), None)


# The values a config may expand to through YAML aliases. The shipped config has about
# 300; a few hundred bytes of nested aliases expand to billions (M11: 7 levels took the
# dag-processor's memory), and everything after parsing walks the expanded tree.
MAX_YAML_VALUES = 100_000


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """Each node's value count with its aliases expanded, computed once per node."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 1  # a node that holds itself counts once
            sizes[id(node)] = 1 + sum(size(child) for child in _children(node))
        return sizes[id(node)]

    size(root)
    return sizes


def _check_alias_expansion(root: yaml.Node, label: str) -> Finding | None:
    sizes = _expanded_sizes(root)
    if sizes[id(root)] <= MAX_YAML_VALUES:
        return None
    node, seen = root, set()  # down to the smallest node over the limit: where the aliases pile up
    while (bigger := [c for c in _children(node) if sizes[id(c)] > MAX_YAML_VALUES and id(c) not in seen]) != []:
        seen.add(id(node))
        node = bigger[0]
    return Finding(
        "",
        f"YAML aliases expand to more than {MAX_YAML_VALUES} values ({sizes[id(root)]}): write the values out",
        f"{label}line {node.start_mark.line + 1}",
    )


class Replace(dict):
    """A mapping tagged `!replace` in an extending file: it replaces, not merges."""


# libyaml's parser where PyYAML was built with it (about 10x faster: the DAG file loads
# the config at every parse), else the pure-Python one; either way safe, plus one tag.
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


_Loader.add_constructor("!replace", lambda loader, node: Replace(loader.construct_mapping(node, deep=True)))


def _read_yaml(file: Path, label: str = "") -> tuple[dict[str, Any], _LineMap, str]:
    """FILE's mapping, its line map, and the SHA-256 of the bytes read (the plan cache's key)."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(file, [Finding("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(file, [Finding("", f"not UTF-8 text (byte {exc.start})")]) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()  # parsed once: the line numbers and the data come from it
        if node is not None and (bomb := _check_alias_expansion(node, label)):
            raise ConfigError(file, [bomb])
        lines = _LineMap(node, label)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            file, [Finding("", f"not valid YAML: {exc}", f"{label}line {mark.line + 1}" if mark else None)]
        ) from None
    finally:
        loader.dispose()
    if lines.duplicates:
        raise ConfigError(file, lines.duplicates)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, [Finding("", "the top level must be a mapping")])
    return data, lines, hashlib.sha256(raw).hexdigest()


# Values that may be paths: a relative one is taken from the folder of the file that says it.
_PATH_KEYS = (("source", "repository"), ("artifacts", "base"))


def _anchor_paths(data: dict[str, Any], folder: Path) -> None:
    for section, key in _PATH_KEYS:
        value = (data.get(section) or {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value:
            data[section][key] = resolve_local(value, str(folder))


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """TOP over BASE. A `!replace` mapping stays marked through a chain of extends, also
    when a file further down refines it, so that no ancestor's keys leak back into it."""
    merged = dict(base)
    for key, value in top.items():
        old = merged.get(key)
        if isinstance(value, dict) and not isinstance(value, Replace) and isinstance(old, dict):
            merged[key] = _merge(old, value)
            if isinstance(old, Replace):
                merged[key] = Replace(merged[key])
        else:
            merged[key] = value
    return merged


def _unmark(data: Any) -> Any:
    """Plain dicts again once every file is merged."""
    if isinstance(data, dict):
        return {k: _unmark(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_unmark(v) for v in data]
    return data


def _loc_to_path(loc: tuple[Any, ...]) -> tuple[str, ...]:
    # pydantic puts "[key]" after a dict key that failed its own validation
    return tuple(str(p) for p in loc if p != "[key]")


def _pydantic_findings(exc: ValidationError, line_maps: list[_LineMap]) -> list[Finding]:
    found = []
    for err in exc.errors():
        path = _loc_to_path(err["loc"])
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"].endswith("_type") or err["type"] in {"dict_type", "list_type"}:
            message = f"wrong type: {err['msg'].lower()}, got {_shown(err['input'])}"
        else:
            message = err["msg"].removeprefix("Value error, ")
        if "[key]" in [str(p) for p in err["loc"]]:
            message = f"invalid key: {message}"
        found.append(Finding(".".join(path), message, _line_in(line_maps, path)))
    return found


def _may_extend(parent: Path, first: Path) -> bool:
    """A config extends YAML of the project or beside itself: any other file of the
    machine was read, and its parse error echoed it into the DAG's import error (M11)."""
    inside = any(parent.is_relative_to(folder) for folder in (PROJECT_ROOT, first.parent))
    return inside and parent.suffix in (".yaml", ".yml")


def _shown(value: Any) -> str:
    """VALUE for an error message: a long string (a token under the wrong key) by its length."""
    if isinstance(value, str) and len(value) > 20:
        return f"a str of {len(value)} characters"
    return f"{type(value).__name__} {value!r}"


def load_config(file: Path | str | None = None) -> NightlyConfig:
    """Load and validate FILE (default: $NIGHTLY_CI_CONFIG, else the shipped config).

    A file may start with `extends: OTHER.yaml` (relative to itself): OTHER is loaded
    first and this file's mappings are merged over it; a mapping tagged `!replace`
    replaces the one it overrides instead.
    """
    return read_config(file)[0]


def read_config(file: Path | str | None = None) -> tuple[NightlyConfig, tuple[tuple[Path, str], ...]]:
    """load_config's model, and every file it read with the SHA-256 of what it read: FILE
    first, then the files it extends."""
    path = config_path(file)
    data, lines, digest = _read_yaml(path)
    read = [(path, digest)]
    _anchor_paths(data, path.parent)
    line_maps = [lines]
    chain = [path]
    while "extends" in data:
        parent_name = data.pop("extends")
        if not isinstance(parent_name, str):
            raise ConfigError(path, [Finding("extends", "must be a file name", _line_in(line_maps, "extends"))])
        parent = (chain[-1].parent / parent_name).resolve()
        if not _may_extend(parent, path):
            raise ConfigError(
                path,
                [
                    Finding(
                        "extends",
                        f"must name a .yaml file inside {PROJECT_ROOT} or {path.parent}, not {parent_name!r}",
                        _line_in(line_maps, "extends"),
                    )
                ],
            )
        if parent in chain:
            cycle = " -> ".join(p.name for p in [*chain[chain.index(parent) :], parent])
            raise ConfigError(path, [Finding("extends", f"extends cycle: {cycle} ({parent.parent})")])
        parent_data, parent_lines, digest = _read_yaml(parent, f"{parent.name} ")
        read.append((parent, digest))
        _anchor_paths(parent_data, parent.parent)
        data = _merge(parent_data, data)
        line_maps.append(parent_lines)
        chain.append(parent)
    try:
        cfg = NightlyConfig.model_validate(_unmark(data))
    except ValidationError as exc:
        raise ConfigError(path, _pydantic_findings(exc, line_maps)) from None
    findings = semantic_findings(cfg)
    if findings:
        raise ConfigError(path, [Finding(f.path, f.message, _line_in(line_maps, f.path)) for f in findings])
    return cfg, tuple(read)


# git's scp-like syntax, USER@HOST:PATH, for any user (not only git@).
_SCP_URL = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:")


def resolve_local(value: str, base_dir: str) -> str:
    """A plain path relative to the config's folder; URLs are returned as they are."""
    if "://" in value or _SCP_URL.match(value):
        return value
    return str((Path(base_dir) / value).resolve())
