"""Every store test runs on both backends: a SQLite file of its own (always) and PostgreSQL (this
run's database, tests/postgres.py; skipped where no PostgreSQL answers, failed under CI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from openft.store import Database
from openft.store.schema import metadata

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """An empty database's URL (on PostgreSQL, a new schema's), not yet migrated."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'openft.db'}"
    return str(request.getfixturevalue("postgres").new_schema())


@pytest.fixture(scope="session")
def migrated_postgres(postgres: Any) -> str:
    """One PostgreSQL schema migrated once for the run; each test empties its tables."""
    url = str(postgres.new_schema())
    database = Database(url)
    database.migrate()
    database.dispose()
    return url


@pytest.fixture
def database(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Database]:
    """A database at the migrations' head, with no rows."""
    if backend == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'openft.db'}")
        database.migrate()
    else:
        database = Database(request.getfixturevalue("migrated_postgres"))
        database.migrate()  # at head already: a no-op
        names = ", ".join(table.name for table in metadata.sorted_tables)
        with database.transaction() as connection:
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    yield database
    database.dispose()
