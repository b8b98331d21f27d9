"""A throwaway PostgreSQL database for the tests, on the server at OPENFT_TEST_POSTGRES_URL (default:
postgres@127.0.0.1:5432, trust auth, as on the CI machine). Each test run creates one database,
`openft_test_<random>`, and drops it when the run ends; within it each user (a test, a test
server) gets a schema of its own, selected by the URL's search_path, so one drop at the end cleans
up everything however many tests ran."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
UNREACHABLE = (
    "PostgreSQL not reachable on 127.0.0.1:5432; start one with trust auth (or set OPENFT_TEST_POSTGRES_URL) "
    "to run these tests"
)


def admin_url() -> str:
    """A SQLAlchemy URL of a database on the test server as a user that may create databases."""
    return os.environ.get("OPENFT_TEST_POSTGRES_URL") or DEFAULT_ADMIN_URL


def conninfo(url: str) -> str:
    """libpq's form of a SQLAlchemy URL (`postgresql+psycopg://` -> `postgresql://`)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


def reachable(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(conninfo(url), connect_timeout=3, autocommit=True) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


@dataclass
class PostgresServer:
    """This run's database, created on first use, and its schemas."""

    admin_url: str
    name: str = field(default_factory=lambda: f"openft_test_{secrets.token_hex(4)}")
    _created: bool = False
    _schemas: int = 0

    @property
    def database_url(self) -> str:
        base, _, _ = self.admin_url.partition("?")[0].rpartition("/")
        return f"{base}/{self.name}"

    def new_schema(self) -> str:
        """The SQLAlchemy URL of a new, empty schema of this run's database: every connection made
        with it (any process's) finds and creates its tables there."""
        import psycopg

        self._create_database()
        self._schemas += 1
        schema = f"s{self._schemas}"
        with psycopg.connect(conninfo(self.database_url), autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
        return f"{self.database_url}?options={quote(f'-csearch_path={schema}')}"

    def _create_database(self) -> None:
        if self._created:
            return
        import psycopg

        with psycopg.connect(conninfo(self.admin_url), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}"')
        self._created = True

    def drop(self) -> None:
        if not self._created:
            return
        import psycopg

        with psycopg.connect(conninfo(self.admin_url), autocommit=True) as connection:
            # FORCE: a server or worker a failed test left running may still be connected.
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._created = False
