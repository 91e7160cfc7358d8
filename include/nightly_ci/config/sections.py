"""The config's sections the plan carries as they are validated: how images are built,
and Slack (the test history's and the culprit finder's are in history.py and culprit.py).

Apart from the rest of the model (schema.py) so that a parse whose plan is kept
(plan/cache.py) creates these few models only, not the whole config's, nor the loader.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from include.nightly_ci.config.types import ConnField, ConnId, Name, SecretId
from include.nightly_ci.config.types import Model as _Model


class BuildSecret(_Model):
    """A BuildKit secret (`RUN --mount=type=secret,id=ID`) from a field of a connection."""

    conn_id: ConnId = Field(description="The Airflow connection that holds the secret.")
    field: ConnField = Field(description="`login`, `password`, `host`, `schema`, or `extra.KEY`.")


class BuildSettings(_Model):
    """How images are built and pushed."""

    framework_target: Name = Field("framework", description="The Dockerfile target of the framework image.")
    runtime_target: Name = Field("runtime", description="The Dockerfile target of the runtime image.")
    timeout_minutes: int = Field(120, ge=1, description="A build task's time limit.")
    retries: int = Field(1, ge=0, description="Retries of a failed task (never for permanent errors).")
    push_attempts: int = Field(6, ge=1, description="Attempts of a registry call on transient errors.")
    push_backoff_seconds: float = Field(10, gt=0, description="The first wait between attempts; it doubles.")
    push_backoff_max_seconds: float = Field(120, gt=0, description="The longest wait between attempts.")
    moving_tag_settle_seconds: float = Field(
        15,
        gt=0,
        le=600,
        description="After moving a moving tag, how long to wait before reading it back (racing runs: the newer"
        " night wins; a tag write must finish within two thirds of it).",
    )
    network_mode: str | None = Field(None, description="The network of the build's RUN steps (`none`, `host`).")
    docker_cli: str = Field(
        "docker", description="The docker CLI that builds: with buildx, or with a built-in BuildKit (20.10)."
    )
    secrets: dict[SecretId, BuildSecret] = Field(
        {}, description="BuildKit secrets by id, each from a connection field (sccache's AWS keys, say)."
    )


class SlackSettings(_Model):
    """Where and when the results are posted."""

    conn_id: ConnId | None = Field(
        None, description="A slackwebhook connection, or with `channel` a slack (API) one; null: no Slack."
    )
    channel: str | None = Field(None, description="The channel for the Slack API; null: the webhook's own.")
    ops_group_id: str | None = Field(None, description="The Slack user group mentioned on failure (@ops-support).")
    when: Literal["always", "failure", "change"] = Field(
        "failure", description="`always`, `failure`, or `change` (new failures or fixes)."
    )
    retries: int = Field(5, ge=0, description="Retries on 429 (after Retry-After) and 5xx.")
