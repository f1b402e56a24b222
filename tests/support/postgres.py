"""The private PostgreSQL server of simulator/localpostgres.py as pytest fixtures: one
server per test session; each test gets a fresh database (`postgres_url`). `store_url`
runs a test once on SQLite and once on PostgreSQL; `store` opens it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from city_platform.store import Store
from simulator.localpostgres import PostgresServer

__all__ = ["PostgresServer", "postgres_server", "postgres_url", "store", "store_url"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's private server."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs twice: on an SQLite file, and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ratings.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    yield s
    s.close()
