"""Tables of the engines plugin. Other plugins may reference ``Engine`` by foreign key
(with ``on_delete="CASCADE"``) after declaring ``requires = ("engines",)``.

Every table that belongs to an engine or an account has ``ON DELETE CASCADE``, so deleting
an engine removes its shares (sharing plugin), pending claims and presence in one statement.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import peewee

from gateway_kernel import Account, BaseModel, Migration, create_tables, utcnow
from gateway_kernel.http import isoformat


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


class DisabledComponent(BaseModel):
    """The kill switch: a component id the engines must not run, and why."""

    component_id = peewee.CharField(primary_key=True, max_length=128)
    reason = peewee.CharField(max_length=500, default="")
    disabled_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "engines_disabled_component"


class UserState(BaseModel):
    """One JSON value per (account, key), stored as canonical JSON text."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="states", on_delete="CASCADE")
    key = peewee.CharField(max_length=64)
    value = peewee.TextField()
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "engines_user_state"
        indexes = ((("account", "key"), True),)


MODELS: list[type[BaseModel]] = [Engine, EngineClaim, DisabledComponent, UserState]


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


def is_online(last_seen: dt.datetime | None, online_s: int, now: dt.datetime,
              socket_until: dt.datetime | None = None) -> bool:
    """A live socket lease, or (no socket since the last heartbeat) a heartbeat within the
    last ``online_s`` seconds (``FLOWORK_ENGINE_ONLINE_S``)."""
    if socket_until is not None:
        return socket_until > now
    return last_seen is not None and now - last_seen <= dt.timedelta(seconds=online_s)


def online_condition(now: Any, since: Any) -> peewee.Expression:
    """:func:`is_online` as SQL (``now``/``since`` may be values or ``Param`` slots)."""
    return (Engine.socket_until > now) | (Engine.socket_until.is_null()
                                          & (Engine.last_seen >= since))


def engine_json(engine: Engine, online_s: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """The API.md engine shape ``{"id","name","status","last_seen"}`` (sharing reuses it)."""
    return engine_row_json(engine.id, engine.name, engine.last_seen, online_s, now or utcnow(),
                           engine.socket_until)


def engine_row_json(engine_id: str, name: str, last_seen: dt.datetime | None, online_s: int,
                    now: dt.datetime, socket_until: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`engine_json` from the columns (hot lists read tuples, not models)."""
    return {
        "id": engine_id,
        "name": name,
        "status": "online" if is_online(last_seen, online_s, now, socket_until) else "offline",
        "last_seen": isoformat(last_seen),
    }
