"""Where the system test leaves its timings for pytest's closing summary (conftest.py)."""

from __future__ import annotations

import pytest

TIMINGS = pytest.StashKey[list[str]]()
