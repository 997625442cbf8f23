"""Tables of the sharing plugin: engine shares and workflow share links.

Both reference their owners by foreign key with ``ON DELETE CASCADE``, so deleting an engine
or an account removes its shares in the same statement (no orphan rows, no cleanup job).
Both have an integer primary key (creation order, for stable sorting) and a public UUID.
"""

from __future__ import annotations

import uuid

import peewee

from gateway_kernel import Account, BaseModel, create_tables, utcnow
from gateway_plugins.engines.api import Engine


def new_public_id() -> str:
    return str(uuid.uuid4())


class EngineShare(BaseModel):
    """``engine`` is shared with ``account`` in ``role``; at most one share per pair."""

    id = peewee.AutoField()
    share_id = peewee.CharField(max_length=36, unique=True, default=new_public_id)
    engine = peewee.ForeignKeyField(Engine, backref="shares", on_delete="CASCADE")
    account = peewee.ForeignKeyField(Account, backref="engine_shares", on_delete="CASCADE",
                                     index=True)
    role = peewee.CharField(max_length=20)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "sharing_engine_share"
        # The unique pair is what makes concurrent duplicate shares fail (one 201, one 409);
        # it also serves lookups by engine.
        indexes = ((("engine", "account"), True),)


class WorkflowLink(BaseModel):
    """A share link to the workflow (``owner``, ``preset_name``)."""

    id = peewee.AutoField()
    share_id = peewee.CharField(max_length=36, unique=True, default=new_public_id)
    owner = peewee.ForeignKeyField(Account, backref="workflow_links", on_delete="CASCADE")
    preset_name = peewee.CharField(max_length=128)
    #: Shown to the owner in the link list (API.md returns it there).
    token = peewee.CharField(max_length=128)
    #: hex SHA-256 of ``token``: resolve looks links up by this unique index, so index
    #: comparisons never run on the secret itself.
    token_digest = peewee.CharField(max_length=64, unique=True)
    permission_level = peewee.CharField(max_length=20)
    link_name = peewee.CharField(max_length=100)
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "sharing_workflow_link"
        indexes = ((("owner", "preset_name"), False),)


MODELS: list[type[BaseModel]] = [EngineShare, WorkflowLink]
MIGRATIONS = [create_tables("0001_initial", EngineShare, WorkflowLink)]
