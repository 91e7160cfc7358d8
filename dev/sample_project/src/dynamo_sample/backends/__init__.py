"""Backends by framework name; the image's FRAMEWORK selects one."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str
    max_batch: int

    def generate(self, prompt: str, gpus: int = 1) -> str:
        return f"[{self.name} x{gpus}] {prompt[::-1]}"


BACKENDS = {
    "vllm": Backend("vllm", 256),
    "sglang": Backend("sglang", 128),
    "trtllm": Backend("trtllm", 64),
}


def current_backend() -> Backend:
    return BACKENDS[os.environ.get("FRAMEWORK", "vllm")]
