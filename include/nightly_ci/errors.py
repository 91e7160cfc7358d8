"""Every error nightly-ci raises on purpose, under one root.

`PermanentError` is the family that retrying cannot fix (bad credentials, a bad ref, a
broken Dockerfile, a bad config): the DAG's retry policy is one rule on it, and every
subclass matches. Anything else a task raises is retried as its `retries` say.
"""

from __future__ import annotations

from dataclasses import dataclass


class NightlyCiError(Exception):
    """The root: an error nightly-ci raised on purpose, with a message that says what and where."""


class PermanentError(NightlyCiError):
    """Retrying cannot help; the task fails at once."""


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class Finding:
    """One problem of a config file: the YAML path, what is wrong, and where."""

    path: str
    message: str
    line: str | None = None  # "line 12", or "base.yaml line 12" when it comes from an extended file

    def __str__(self) -> str:
        where = f"{self.path or '<root>'}" + (f" ({self.line})" if self.line else "")
        return f"{where}: {self.message}"


class ConfigError(PermanentError, ValueError):
    """Every finding of one config file; the message lists them all."""

    def __init__(self, file: object, findings: list[Finding]):
        self.file = str(file)
        self.findings = findings
        lines = "\n".join(f"  - {f}" for f in findings)
        super().__init__(f"invalid nightly-ci config {self.file}: {len(findings)} problem(s)\n{lines}")


class MarkerError(NightlyCiError, ValueError):
    """A pytest marker expression that pytest would not parse."""


# ---------------------------------------------------------------- source


class SourceError(PermanentError):
    """The ref or repository can't give a commit to build."""


class SourceUnavailable(NightlyCiError):
    """The git server did not answer in time, refused, or failed with a 5xx: worth retrying."""


# ---------------------------------------------------------------- images


class BuildError(PermanentError):
    """The Dockerfile failed; the message carries the failing step's output."""


class BuildUnavailable(NightlyCiError):
    """A build failed for a cause outside the Dockerfile that may pass on a retry: a base
    image's registry timing out, resetting, answering 5xx or 429, or a full disk."""


class BuildSecretError(PermanentError):
    """A build secret's connection or field is missing; the message names them, never a value."""


class EngineConfigError(PermanentError):
    """An engine connection that can't be used safely as it is; the message names it."""


class EngineUnavailable(NightlyCiError):
    """A Docker engine could not be reached: worth retrying."""


class RegistryError(NightlyCiError):
    """A registry operation failed (neither a credentials problem nor a transient one)."""


class RegistryAuthError(RegistryError, PermanentError):
    """401/403: retrying can't help; the message names the connection."""


class RegistryUnavailable(RegistryError):
    """Connection refused, timeouts, 5xx: worth retrying."""


class RegistryRateLimited(RegistryUnavailable):
    """429: the registry asks for less; RETRY_AFTER is how long it said to wait (None: it did not say)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class StoreError(NightlyCiError):
    """The artifact store refused a write after the retries; the message names the path."""


# ---------------------------------------------------------------- report


class SlackError(NightlyCiError):
    """Slack refused a message after the retries; the message names the connection."""


class NoResultsError(NightlyCiError):
    """The results summary did not complete, so there is nothing to judge or post."""


class NightlyFailed(NightlyCiError):
    """The verdict: at least one job of the nightly did not pass."""


class CulpritError(NightlyCiError):
    """A culprit search can't take its step: what is missing, and what to do."""


class FindingMissing(PermanentError):
    """The culprit finder's report was asked for a finding the history store does not hold."""


# ---------------------------------------------------------------- history


class HistoryConfigError(PermanentError):
    """The history store's connection is missing or of a kind it can't use; the message names it."""


class HistoryUnavailable(NightlyCiError):
    """The history database did not answer or refused a statement: the night's results are
    still in the artifact store, and `history import` brings them in later."""
