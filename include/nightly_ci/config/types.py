"""The config model's building blocks: checked string types and the base model. Every
section's model (schema.py, history.py) is made of these."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

from include.nightly_ci.names import (
    ABS_PATH_RE,
    BUILD_ARG_NAME_RE,
    BUILD_ARG_VALUE_RE,
    CONN_FIELD_RE,
    CONN_ID_RE,
    GIT_REF_RE,
    NAME_RE,
    PLATFORM_RE,
    POOL_RE,
    REL_PATH_RE,
    REPOSITORY_RE,
    SECRET_ID_RE,
)


def _pattern(regex: re.Pattern[str], what: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, str) and not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what} (must match {regex.pattern})")
        return value

    return BeforeValidator(check)


def _string(regex: re.Pattern[str]) -> WithJsonSchema:
    """The JSON schema of a string checked by _pattern (editors validate with it)."""
    return WithJsonSchema({"type": "string", "pattern": f"^(?:{regex.pattern})$"})


def _scalar_to_str(value: Any) -> Any:
    # YAML reads CUDA_VERSION: 129 as an int; a build arg is a string either way.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return value


Name = Annotated[
    str,
    _pattern(NAME_RE, "name (lower-case letters, digits, '_'; used in task ids, tags and shells)"),
    _string(NAME_RE),
]
PoolName = Annotated[str, _pattern(POOL_RE, "pool name"), _string(POOL_RE)]
QueueName = Annotated[str, _pattern(POOL_RE, "queue name"), _string(POOL_RE)]
ImagePath = Annotated[str, _pattern(ABS_PATH_RE, "absolute path in the image"), _string(ABS_PATH_RE)]
# A folder on the host of a test runner (its Docker engine's, or a Kubernetes node's): mounted read-only.
HostPath = Annotated[str, _pattern(ABS_PATH_RE, "absolute path on the runner's host"), _string(ABS_PATH_RE)]
ConnId = Annotated[str, _pattern(CONN_ID_RE, "connection id"), _string(CONN_ID_RE)]
GitRef = Annotated[str, _pattern(GIT_REF_RE, "git branch name"), _string(GIT_REF_RE)]
RelPath = Annotated[str, _pattern(REL_PATH_RE, "relative path inside the repository"), _string(REL_PATH_RE)]
Platform = Annotated[str, _pattern(PLATFORM_RE, "platform (os/arch[/variant])"), _string(PLATFORM_RE)]
Repository = Annotated[str, _pattern(REPOSITORY_RE, "image repository name"), _string(REPOSITORY_RE)]
BuildArgName = Annotated[str, _pattern(BUILD_ARG_NAME_RE, "build arg name"), _string(BUILD_ARG_NAME_RE)]
BuildArgValue = Annotated[
    str,
    BeforeValidator(_scalar_to_str),
    _pattern(BUILD_ARG_VALUE_RE, "build arg value (no spaces or shell characters)"),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": f"^(?:{BUILD_ARG_VALUE_RE.pattern})$"}, {"type": "number"}]}
    ),
]
BuildArgs = dict[BuildArgName, BuildArgValue]
SecretId = Annotated[str, _pattern(SECRET_ID_RE, "build secret id"), _string(SECRET_ID_RE)]
ConnField = Annotated[str, _pattern(CONN_FIELD_RE, "connection field"), _string(CONN_FIELD_RE)]


class Model(BaseModel):
    """A section: unknown keys refused, values as typed (strict), frozen.

    Validators are built when first used, not at import: the DAG file imports the models
    at every parse and validates only the whole config, whose validator covers them all
    (built at once, it costs a parse half what 23 validators of their own did). A section
    is defaulted by a factory, not an instance, which would build its validator at import."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)
