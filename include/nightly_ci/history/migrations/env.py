"""Alembic's environment for the history store: always run through
`history.store.migrate`, which hands over an open connection."""

from __future__ import annotations

from alembic import context

from include.nightly_ci.history.tables import VERSION_TABLE, metadata


def run() -> None:
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


run()
