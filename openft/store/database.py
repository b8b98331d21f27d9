"""The database: one SQLAlchemy engine, migrated to head when opened. SQLite (the embedded
default) or PostgreSQL (`postgresql+psycopg://...`): the same tables, migrations and queries run on
both; where the two differ (the queue's claim, a lock around a read-then-write) the store asks
`Database.dialect`/`connection.dialect.name` and says why."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event

from openft.errors import InvalidRequest
from openft.store import locks

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_SECONDS = 30  # how long a writer waits for SQLite's one write lock


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _create_engine(url)
        self._local = threading.local()

    def migrate(self) -> None:
        """Applies every Alembic migration not yet applied."""
        logging.getLogger("alembic").setLevel(logging.WARNING)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as connection:
            # An API server and its workers start together, each migrating: on PostgreSQL the first
            # one migrates, the others wait here and then find the schema at head. (SQLite's
            # BEGIN IMMEDIATE already makes them take turns.) Migrations on PostgreSQL are
            # transactional, so a failed one leaves nothing half-done.
            locks.serialize(connection, "openft:migrate")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        # A second transaction opened inside a first one on the same thread would wait for the
        # first's write lock until the busy timeout: a self-deadlock. Refuse it outright.
        if getattr(self._local, "active", False):
            raise RuntimeError("nested database transaction")
        self._local.active = True
        try:
            with self.engine.begin() as connection:
                yield connection
        finally:
            self._local.active = False

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        # PostgreSQL: READ COMMITTED, the server's default. Every status change is a conditional
        # UPDATE, claims lock with FOR UPDATE SKIP LOCKED (store/jobs.py) and the read-then-write
        # checks of quotas take an advisory lock (store/locks.py), so nothing relies on SQLite's
        # one-writer-at-a-time. pre_ping: a connection the server closed (restart, idle timeout)
        # is replaced before use instead of failing a request.
        engine = create_engine(url, pool_pre_ping=True)
        event.listen(engine, "before_cursor_execute", _refuse_nul)
        return engine
    database_path = url.split("///", 1)[-1]
    if database_path and database_path != ":memory:":
        Path(database_path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False})
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    event.listen(engine, "connect", _configure_sqlite_connection)
    # pysqlite's own transaction handling defers BEGIN; emit it ourselves so every transaction
    # takes the write lock up front and two workers can't both read-then-write the same row.
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _refuse_nul(
    _connection: Connection, _cursor: Any, _statement: str, parameters: Any, _context: Any, executemany: bool
) -> None:
    """PostgreSQL's text can't hold a NUL character: a value with one (a filename, a cursor, an id
    in a path) would fail the statement with a driver error, a 500. Refused as a bad request
    instead, on SQLite too, so that both backends store and find the same things."""
    for row in parameters if executemany else [parameters]:
        values = row.values() if isinstance(row, dict) else row or ()
        if any(isinstance(value, str) and "\x00" in value for value in values):
            raise InvalidRequest(
                "A value in this request holds a NUL character (\\u0000), which text here can't hold.",
                code="invalid_value",
            )


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switches the file to WAL (it stays so). Processes opening a new file together each take a
    shared lock and ask for an exclusive one to switch it; SQLite answers all but one "database is
    locked" at once, without its busy handler, since waiting would deadlock. So those retry, until
    the switch is done or the busy timeout would have run out."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # a backoff: the other switch takes well under a millisecond


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
