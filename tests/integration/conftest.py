"""Fixtures the integration tests share: a Postgres server from Debian's packages (one per
session, started only by the tests that ask for it) and a history store on SQLite or on
that server."""

from __future__ import annotations

import pytest

from include.nightly_ci.history.store import HistoryStore
from tests.services import Postgres


@pytest.fixture(scope="session")
def postgres():
    server = Postgres()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """A migrated history store: an SQLite file, or a database of its own on the server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.db'}"
    else:
        url = request.getfixturevalue("postgres").createdb(f"h_{tmp_path.name.lower().replace('-', '_')[-40:]}")
    history = HistoryStore(url)
    history.migrate()
    yield history
    history.close()
