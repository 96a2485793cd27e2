"""Fixtures every test folder may use: a throwaway PostgreSQL server.

``postgres_server`` (one per session) is skipped when PostgreSQL is not installed, and
fails instead under ``CI=true``, where .ci/run installs it. ``postgres_dsn`` is a fresh
empty database on it for one test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .support.postgres import PostgresServer, find_bindir


def require_postgres() -> None:
    """Skip the calling test when PostgreSQL is missing (fail it under CI=true)."""
    if find_bindir() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed: .ci/run should have installed it")
        pytest.skip("PostgreSQL is not installed")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    require_postgres()
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database()
