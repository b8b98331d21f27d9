"""Cursor pagination over any table with `seq`, `id` and `organization` columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, RowMapping, Table, select


class UnknownCursor(LookupError):
    """`after` names no row in this list."""


@dataclass
class Page:
    rows: Sequence[RowMapping]
    has_more: bool


def fetch_page(
    connection: Connection,
    table: Table,
    conditions: Sequence[ColumnElement[bool]],
    *,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"] = "desc",
) -> Page:
    """The `limit` rows that follow `after` in `order`, plus whether more follow them."""
    seq: Any = table.c.seq
    where = list(conditions)
    if after is not None:
        cursor_seq = connection.execute(select(seq).where(table.c.id == after, *conditions)).scalar()
        if cursor_seq is None:
            raise UnknownCursor(after)
        where.append(seq < cursor_seq if order == "desc" else seq > cursor_seq)
    ordering = seq.desc() if order == "desc" else seq.asc()
    rows = connection.execute(select(table).where(*where).order_by(ordering).limit(limit + 1)).mappings()
    fetched = rows.all()
    return Page(rows=fetched[:limit], has_more=len(fetched) > limit)
