"""Build secrets: fields of Airflow connections, handed to BuildKit as secret files.

Each value is masked in every log the moment it is read, written to a 0600 file in the
build's private temporary folder (deleted with it), and given to BuildKit as
`--secret id=ID,src=FILE`: only the steps that mount the secret see it, and no layer,
label, history entry or output of the build holds it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from include.nightly_ci.config.sections import BuildSecret
from include.nightly_ci.errors import BuildSecretError


def secret_value(secret_id: str, source: BuildSecret) -> str:
    """The value of SOURCE's field, masked; the error names the connection, never a value."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    try:
        conn = BaseHook.get_connection(source.conn_id)
    except AirflowNotFoundException:
        raise BuildSecretError(
            f"build secret {secret_id!r}: Airflow connection {source.conn_id!r} does not exist"
        ) from None
    if source.field.startswith("extra."):
        value = conn.extra_dejson.get(source.field.removeprefix("extra."))
    else:
        value = getattr(conn, source.field, None)
    if not value:
        raise BuildSecretError(f"build secret {secret_id!r}: connection {source.conn_id!r} has no {source.field}")
    mask_secret(str(value))
    return str(value)


def write_secrets(secrets: Mapping[str, BuildSecret], folder: str) -> dict[str, str]:
    """Every secret as a private file in FOLDER; secret id -> file."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    files = {}
    for secret_id, source in secrets.items():
        path = os.path.join(folder, secret_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret_value(secret_id, source))
        files[secret_id] = path
    return files
