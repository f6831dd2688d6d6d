"""Fixtures shared by the tests of several modules."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.pg import PgServer

# --- PostgreSQL: one real server for the session, a fresh database per test ---------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A real PostgreSQL server (tests/pg.py) on a free port of 127.0.0.1, stopped after the session."""
    from tests.pg import start_postgres

    # Not pytest's tmp_path: its parents are private to the user running the tests, and the server
    # runs as the postgres user when that user is root.
    directory = Path(tempfile.mkdtemp(prefix="mss-pg-"))
    server = start_postgres(directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres: PgServer) -> str:
    """The DSN of a new, empty database of the session's server (tests stay independent)."""
    if not postgres.running():  # a test stopped or killed it
        postgres.start_again()
    return postgres.create_database()
