"""The config stage: the matrix YAML -> a typed, checked model (every finding at once).

Its names load on first use: a parse whose plan is kept (plan/cache.py) imports only the
sections the plan carries, not the loader and the whole model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.nightly_ci.config.files import CONFIG_ENV, DEFAULT_CONFIG, config_path
    from include.nightly_ci.config.loader import load_config, read_config, resolve_local
    from include.nightly_ci.config.schema import NightlyConfig
    from include.nightly_ci.config.sections import BuildSettings, SlackSettings
    from include.nightly_ci.errors import ConfigError, Finding

_WHERE = {
    "CONFIG_ENV": "files",
    "DEFAULT_CONFIG": "files",
    "config_path": "files",
    "load_config": "loader",
    "read_config": "loader",
    "resolve_local": "loader",
    "NightlyConfig": "schema",
    "BuildSettings": "sections",
    "SlackSettings": "sections",
}

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "BuildSettings",
    "ConfigError",
    "Finding",
    "NightlyConfig",
    "SlackSettings",
    "config_path",
    "load_config",
    "read_config",
    "resolve_local",
]


def __getattr__(name: str) -> Any:
    if name in ("ConfigError", "Finding"):
        return getattr(importlib.import_module("include.nightly_ci.errors"), name)
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
