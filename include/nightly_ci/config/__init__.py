"""The config stage: the matrix YAML -> a typed, checked model (every finding at once)."""

from include.nightly_ci.config.loader import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    config_path,
    load_config,
    read_config,
    resolve_local,
)
from include.nightly_ci.config.schema import BuildSettings, NightlyConfig, SlackSettings
from include.nightly_ci.errors import ConfigError, Finding

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
