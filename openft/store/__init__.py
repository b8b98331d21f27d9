"""The database: SQLAlchemy Core tables, Alembic migrations and the queries the service needs."""

from openft.store.database import Database
from openft.store.paging import UnknownCursor

__all__ = ["Database", "UnknownCursor"]
