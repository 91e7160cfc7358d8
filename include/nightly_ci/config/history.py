"""The test history's section: the store, the flake reruns, the quarantine and drift."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from include.nightly_ci.config.types import ConnId
from include.nightly_ci.config.types import Model as _Model


class QuarantineItem(_Model):
    """A test whose failures are recorded but do not make a night red, until it expires."""

    pattern: str = Field(min_length=1, description="An fnmatch pattern over the test id (`module.Class::test`).")
    owner: str = Field(min_length=1, description="Who is pinged on Slack when it expires (`<@U123>`, `@alice`).")
    reason: str = Field(min_length=1, description="Why it is quarantined.")
    issue: str = Field("", description="The issue that tracks the fix (a URL).")
    expires: date = Field(description="The last night it mutes; after it, its owner is pinged every night.")


class HistorySettings(_Model):
    """Every test case of every night in a database, flakes told from regressions, a quarantine."""

    conn_id: ConnId | None = Field(
        "nightly_ci_history", description="The history database (postgres, or sqlite: the file as host); null: none."
    )
    reruns: int = Field(3, ge=0, le=10, description="Reruns of each newly failing case, in the image that failed.")
    max_rerun_cases: int = Field(25, ge=1, description="More newly failing cases in a suite: not rerun, a regression.")
    flaky_nights: int = Field(2, ge=1, description="A case flaky on this many nights of the window is quarantined.")
    window_nights: int = Field(14, ge=1, description="The nights flaky_nights counts over.")
    release_after_clean_nights: int = Field(7, ge=1, description="An entry is released after this many clean nights.")
    auto_owner: str = Field("", description="The owner of automatic entries; empty: the Slack ops group.")
    drift_share: float = Field(
        0.2, gt=0, lt=1, description="A suite whose test count falls by more than this share is flagged."
    )
    quarantine: list[QuarantineItem] = Field([], description="Quarantined tests, each with an owner and expiry.")
