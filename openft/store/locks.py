"""A lock held until the end of the transaction, for the few read-then-write checks that a
conditional UPDATE can't express (a quota counted before the insert it guards; an upload's parts
summed before one more is added; a permission looked up before it is inserted).

SQLite needs none: every transaction begins with BEGIN IMMEDIATE (store/database.py), so writers
already take turns. PostgreSQL, at READ COMMITTED, would let two such transactions both read the
old state and both write; `pg_advisory_xact_lock` on a key makes those that share the key take
turns, and leaves every other transaction (claims, events, other organizations) alone.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select


def serialize(connection: Connection, key: str) -> None:
    """Waits until no other transaction holds `key`, then holds it until this one ends. Call it
    before the reads it guards: at READ COMMITTED each later statement sees what the transaction
    that held the key before committed."""
    if connection.dialect.name == "postgresql":
        # hashtextextended: a 64-bit hash of the key, the advisory lock's one-bigint form.
        connection.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))
