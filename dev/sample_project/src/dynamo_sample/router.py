"""Round-robin routing of requests over workers."""

from __future__ import annotations

from itertools import cycle


class Router:
    def __init__(self, workers: list[str]):
        if not workers:
            raise ValueError("a router needs at least one worker")
        self._next = cycle(workers)

    def route(self, request: str) -> tuple[str, str]:
        return next(self._next), request
