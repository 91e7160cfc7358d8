"""Where the config is: the shipped file, or the one $NIGHTLY_CI_CONFIG names."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = PROJECT_ROOT / "include" / "config"
DEFAULT_CONFIG = CONFIG_DIR / "nightly_ci.yaml"
CONFIG_ENV = "NIGHTLY_CI_CONFIG"


def config_path(file: Path | str | None = None) -> Path:
    """The config file FILE names: FILE, else $NIGHTLY_CI_CONFIG, else the shipped config."""
    return Path(file or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).resolve()
