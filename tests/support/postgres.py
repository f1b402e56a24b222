"""The private PostgreSQL server of simulator/localpostgres.py as pytest fixtures: one
server per test session; each test gets a fresh database (`postgres_url`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulator.localpostgres import PostgresServer

__all__ = ["PostgresServer", "postgres_server", "postgres_url"]


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
