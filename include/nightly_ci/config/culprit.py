"""The culprit finder's section: how a regression's commit range is searched and verified."""

from __future__ import annotations

from pydantic import Field

from include.nightly_ci.config.types import Model as _Model
from include.nightly_ci.config.types import PoolName


class CulpritSettings(_Model):
    """Finding the commit that broke a test (the `{dag_id}_culprit` DAG), by running it."""

    enabled: bool = Field(True, description="The nightly starts the culprit finder on each night's regressions.")
    pool: PoolName | None = Field(
        None,
        description="The pool of the finder's builds and test runs (a few slots, so it never starves the "
        "nightly); it must be defined under pools. null: the cells' own pools.",
    )
    reruns: int = Field(3, ge=2, le=10, description="Runs of the failing tests on each candidate (bad: 2 fail).")
    parallelism: int = Field(3, ge=1, le=8, description="Candidates built and tested at once in a round (k).")
    gpu_hours: float = Field(
        4, gt=0, description="The GPU time one finding may use; spent, it stops with a partial result."
    )
    max_commits: int = Field(512, ge=2, description="A longer range is reported, not searched.")
