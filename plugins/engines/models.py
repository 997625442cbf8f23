"""Tables of the engines plugin. Other plugins may reference ``Engine`` by foreign key
(with ``on_delete="CASCADE"``) after declaring ``requires = ("engines",)``."""

from __future__ import annotations

import uuid

import peewee

from gateway_kernel import Account, BaseModel, utcnow


def new_engine_id() -> str:
    return str(uuid.uuid4())


class Engine(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=36, default=new_engine_id)
    owner = peewee.ForeignKeyField(Account, backref="engines", on_delete="CASCADE", index=True)
    name = peewee.CharField(max_length=100)
    #: hex SHA-256 of the current token; the unique index makes token lookup O(1).
    token_digest = peewee.CharField(max_length=64, unique=True)
    created_at = peewee.DateTimeField(default=utcnow)
    #: presence: last heartbeat time and the URL it reported (None until the first one).
    last_seen = peewee.DateTimeField(null=True)
    url = peewee.CharField(max_length=2048, null=True)

    class Meta:
        table_name = "engines_engine"
