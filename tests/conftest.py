"""Fixtures shared by the tests of several modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.pg import PgServer

# --- PostgreSQL: one real server for the session, a fresh database per test ---------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A real PostgreSQL server (tests/pg.py) on a free port of 127.0.0.1, stopped after the session."""
    from tests.pg import postgres_in_a_temp_dir

    with postgres_in_a_temp_dir() as server:
        yield server


@pytest.fixture
def pg_dsn(postgres: PgServer) -> str:
    """The DSN of a new, empty database of the session's server (tests stay independent)."""
    if not postgres.running():  # a test stopped or killed it
        postgres.start_again()
    return postgres.create_database()
