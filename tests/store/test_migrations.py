"""The Alembic migrations, on SQLite and PostgreSQL: they bring an empty database to head, describe
exactly the tables of store/schema.py, run again as a no-op, and several processes starting at once
(an API server and its workers) may all migrate the same empty database."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from openft.store import Database
from openft.store.database import MIGRATIONS_DIR
from openft.store.schema import metadata


def head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    revision = ScriptDirectory.from_config(config).get_current_head()
    assert revision is not None
    return revision


def test_migrations_reach_head_and_match_the_schema(url: str) -> None:
    database = Database(url)
    database.migrate()
    database.migrate()  # nothing left to apply
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == head()
        differences = compare_metadata(context, metadata)
    database.dispose()
    assert differences == []


def test_processes_starting_together_all_migrate(url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def migrate() -> None:
        database = Database(url)  # each its own engine, as each process has
        try:
            start.wait()
            database.migrate()
        except BaseException as error:
            errors.append(error)
        finally:
            database.dispose()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    database = Database(url)
    with database.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head()
    database.dispose()
