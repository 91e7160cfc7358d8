import os
from pathlib import Path

import pytest

BUILD_INFO = Path("/opt/framework/build-info")


@pytest.fixture
def build_info() -> dict[str, str]:
    if not BUILD_INFO.exists():
        pytest.skip("runs inside a built image")
    return dict(line.split("=", 1) for line in BUILD_INFO.read_text().split())


@pytest.fixture
def framework() -> str:
    return os.environ.get("FRAMEWORK", "vllm")
