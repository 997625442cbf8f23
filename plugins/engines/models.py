"""Tables of the engines plugin. Other plugins reach ``Engine`` through :mod:`.api` (its
public API): by foreign key (with ``on_delete="CASCADE"``) after ``requires = ("engines",)``.

Every table that belongs to an engine or an account has ``ON DELETE CASCADE``, so deleting
an engine removes its shares (sharing plugin), pending claims and presence in one statement.

The kill switch and GUI user state tables were engines' until issue 15; their plugins
(killswitch, user_state) own them now, under their old names (see
:mod:`gateway_plugins.killswitch.models`). ``0001_initial`` keeps its name and creates only
these tables now.
"""

from __future__ import annotations

import uuid

import peewee

from gateway_kernel import Account, BaseModel, Migration, create_tables, utcnow


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
    #: realtime presence: online until this time (a lease the instance holding the engine's
    #: socket renews); set to the release time when the last socket closes, so the heartbeat
    #: rule no longer applies; NULL when the engine's presence comes from heartbeats.
    socket_until = peewee.DateTimeField(null=True)
    #: the gateway instance holding the lease (only it renews or releases it).
    socket_holder = peewee.CharField(max_length=64, null=True)

    class Meta:
        table_name = "engines_engine"


class EngineClaim(BaseModel):
    """A dashboard claim approved by the owner (API.md "Claim flow"), keyed by the SHA-256 of
    the request id so that a database reader cannot redeem pending claims."""

    request_digest = peewee.CharField(primary_key=True, max_length=64)
    engine = peewee.ForeignKeyField(Engine, backref="claims", on_delete="CASCADE", index=True)
    expires_at = peewee.DateTimeField(index=True)
    used = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "engines_claim"


MODELS: list[type[BaseModel]] = [Engine, EngineClaim]


def _add_socket_presence(db: peewee.Database) -> None:
    # 0001 creates tables from today's models, so a fresh database has the columns already.
    from playhouse.migrate import SchemaMigrator, migrate

    have = {c.name for c in db.get_columns(Engine._meta.table_name)}
    migrator = SchemaMigrator.from_database(db)
    steps = [migrator.add_column(Engine._meta.table_name, column, field)
             for column, field in (("socket_until", peewee.DateTimeField(null=True)),
                                   ("socket_holder", peewee.CharField(max_length=64, null=True)))
             if column not in have]
    if steps:
        migrate(*steps)


MIGRATIONS = [create_tables("0001_initial", *MODELS),
              Migration("0002_socket_presence", _add_socket_presence)]
