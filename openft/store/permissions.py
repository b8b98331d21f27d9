"""Rows of checkpoint permissions: a checkpoint shared with another organization. A row goes with
its checkpoint (`ON DELETE CASCADE`), so deleting a model or checkpoint takes its permissions along."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, RowMapping, delete, insert, select

from openft.store.checkpoints import CheckpointRecord
from openft.store.paging import fetch_page
from openft.store.records import row_values
from openft.store.schema import checkpoint_permissions, checkpoints


@dataclass(frozen=True)
class PermissionRecord:
    id: str
    checkpoint_id: str
    organization: str  # the organization the checkpoint is shared with
    created_at: int

    @classmethod
    def from_row(cls, row: RowMapping) -> PermissionRecord:
        return cls(**row_values(cls, row))


def insert_permission(connection: Connection, record: PermissionRecord) -> None:
    connection.execute(insert(checkpoint_permissions).values(**record.__dict__))


def find_permission(connection: Connection, checkpoint_id: str, organization: str) -> PermissionRecord | None:
    """The permission that shares `checkpoint_id` with `organization`, if there is one."""
    row = (
        connection.execute(
            select(checkpoint_permissions).where(
                checkpoint_permissions.c.checkpoint_id == checkpoint_id,
                checkpoint_permissions.c.organization == organization,
            )
        )
        .mappings()
        .first()
    )
    return PermissionRecord.from_row(row) if row else None


def get_permission(connection: Connection, checkpoint_id: str, permission_id: str) -> PermissionRecord | None:
    row = (
        connection.execute(
            select(checkpoint_permissions).where(
                checkpoint_permissions.c.id == permission_id,
                checkpoint_permissions.c.checkpoint_id == checkpoint_id,
            )
        )
        .mappings()
        .first()
    )
    return PermissionRecord.from_row(row) if row else None


def list_permissions(
    connection: Connection,
    checkpoint_id: str,
    *,
    organization: str | None,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> tuple[list[PermissionRecord], bool]:
    """A page of the checkpoint's permissions (only those for `organization`, when given)."""
    conditions = [checkpoint_permissions.c.checkpoint_id == checkpoint_id]
    if organization is not None:
        conditions.append(checkpoint_permissions.c.organization == organization)
    page = fetch_page(connection, checkpoint_permissions, conditions, after=after, limit=limit, order=order)
    return [PermissionRecord.from_row(row) for row in page.rows], page.has_more


def checkpoint_exists(connection: Connection, checkpoint_id: str) -> bool:
    return connection.execute(select(checkpoints.c.seq).where(checkpoints.c.id == checkpoint_id)).first() is not None


def delete_permission(connection: Connection, permission_id: str) -> None:
    connection.execute(delete(checkpoint_permissions).where(checkpoint_permissions.c.id == permission_id))


def shared_checkpoints(connection: Connection, organization: str) -> list[CheckpointRecord]:
    """Other organizations' checkpoints shared with `organization`, in the order they were shared."""
    rows = connection.execute(
        select(checkpoints)
        .join(checkpoint_permissions, checkpoint_permissions.c.checkpoint_id == checkpoints.c.id)
        .where(checkpoint_permissions.c.organization == organization, checkpoints.c.organization != organization)
        .order_by(checkpoint_permissions.c.seq)
    ).mappings()
    return [CheckpointRecord.from_row(row) for row in rows]
