"""Checkpoint permissions: an organization shares one of its fine-tuned models or checkpoints with
other organizations, which may then use it as a model (chat, completions, the Models API, the
start of a job: `ModelCatalog` honours the permissions) but not delete it or share it further.

OpenAI's `project_id` is an organization here: its name as the keys give it (`rival`) or its id
(`org-rival`, as a job's `organization_id` shows it); both denote the same one, and answers give
the name. Who may manage a checkpoint's permissions: with `OPENFT_ADMIN_KEYS` set, only an admin
key of its organization (as OpenAI requires an admin key); without, any key of its organization.
"""

from __future__ import annotations

from openft import ids
from openft.config import Settings
from openft.errors import InvalidRequest, NotFound, PermissionDenied
from openft.protocol.common import DeletedObject
from openft.protocol.permissions import CheckpointPermission, PermissionList, PermissionOrder
from openft.service.catalog import ModelCatalog
from openft.service.models import model_not_found
from openft.service.naming import organization_id
from openft.service.paging import known_cursor
from openft.store import Database, locks
from openft.store import permissions as permission_rows
from openft.store.checkpoints import CheckpointRecord
from openft.store.permissions import PermissionRecord

CHECKPOINT_PARAM = "fine_tuned_model_checkpoint"


class PermissionService:
    def __init__(self, database: Database, catalog: ModelCatalog, settings: Settings) -> None:
        self.database = database
        self.catalog = catalog
        self.settings = settings

    def create(self, organization: str, checkpoint_name: str, project_ids: list[str], *, admin: bool) -> PermissionList:
        """Shares the checkpoint with each organization named; one it is already shared with keeps
        (and answers) the permission it has, so repeating a creation changes nothing."""
        checkpoint = self._manageable(organization, checkpoint_name, admin=admin)
        grantees: list[str] = []
        for index, project_id in enumerate(project_ids):
            grantee = self._organization(project_id)
            if grantee is None:
                raise InvalidRequest(
                    f"Invalid value for 'project_ids.{index}': {project_id!r} is not an organization of this "
                    "server. In openft a project id is an organization, as OPENFT_API_KEYS and "
                    "OPENFT_ADMIN_KEYS name it (`acme`), or its id (`org-acme`).",
                    param=f"project_ids.{index}",
                    code="invalid_value",
                )
            if grantee not in grantees:
                grantees.append(grantee)
        records: list[PermissionRecord] = []
        with self.database.transaction() as connection:
            locks.serialize(connection, f"permissions:{checkpoint.id}")  # the same grant at once: one row
            if not permission_rows.checkpoint_exists(connection, checkpoint.id):  # deleted meanwhile
                raise model_not_found(checkpoint_name, param=CHECKPOINT_PARAM)
            for grantee in grantees:
                record = permission_rows.find_permission(connection, checkpoint.id, grantee)
                if record is None:
                    record = PermissionRecord(
                        id=ids.new_id("cp_"), checkpoint_id=checkpoint.id, organization=grantee, created_at=ids.now()
                    )
                    permission_rows.insert_permission(connection, record)
                records.append(record)
        return _page(records, has_more=False)

    def list(
        self,
        organization: str,
        checkpoint_name: str,
        *,
        admin: bool,
        after: str | None,
        limit: int,
        order: PermissionOrder,
        project_id: str | None,
    ) -> PermissionList:
        """A page of the checkpoint's permissions, newest first by default; `last_id` is the cursor
        of the next page (the SDK's `list` pages by it)."""
        checkpoint = self._manageable(organization, checkpoint_name, admin=admin)
        grantee = None if project_id is None else (self._organization(project_id) or project_id)
        with self.database.transaction() as connection, known_cursor(after, "permission"):
            records, has_more = permission_rows.list_permissions(
                connection,
                checkpoint.id,
                organization=grantee,
                after=after,
                limit=limit,
                order="asc" if order == "ascending" else "desc",
            )
        return _page(records, has_more=has_more)

    def delete(self, organization: str, checkpoint_name: str, permission_id: str, *, admin: bool) -> DeletedObject:
        """The organization it named loses the checkpoint at once: its next request for it is a 404."""
        checkpoint = self._manageable(organization, checkpoint_name, admin=admin)
        with self.database.transaction() as connection:
            record = permission_rows.get_permission(connection, checkpoint.id, permission_id)
            if record is None:
                raise NotFound(
                    f"No such checkpoint permission: {permission_id}", param="permission_id", code="not_found"
                )
            permission_rows.delete_permission(connection, record.id)
        return DeletedObject(id=record.id, object="checkpoint.permission", deleted=True)

    def _manageable(self, organization: str, checkpoint_name: str, *, admin: bool) -> CheckpointRecord:
        if self.settings.admin_key_organizations and not admin:
            raise PermissionDenied(
                "You have insufficient permissions for this operation: managing checkpoint permissions "
                "requires an admin key (one of OPENFT_ADMIN_KEYS) of the checkpoint's organization, and this "
                "is a plain API key.",
                code="admin_key_required",
            )
        checkpoint, _ = self.catalog.owned_checkpoint(organization, checkpoint_name, param=CHECKPOINT_PARAM)
        return checkpoint

    def _organization(self, project_id: str) -> str | None:
        """The organization a project id names: its name, or its `org-` id."""
        known = self.settings.organizations
        if project_id in known:
            return project_id
        matches = sorted(name for name in known if organization_id(name) == organization_id(project_id))
        return matches[0] if matches else None


def _page(records: list[PermissionRecord], *, has_more: bool) -> PermissionList:
    data = [
        CheckpointPermission(id=record.id, created_at=record.created_at, project_id=record.organization)
        for record in records
    ]
    return PermissionList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=has_more,
    )
