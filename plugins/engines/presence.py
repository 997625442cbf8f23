"""Presence: when an engine counts as online, and the ``flowork_engine_*`` socket hooks.

An engine is online while a realtime socket holds a lease on it (``socket_until`` in the
future), or, when no socket has held it since its last heartbeat, while its heartbeat is
fresh: at most ``FLOWORK_ENGINE_ONLINE_S`` old (:func:`is_online`). The instance holding the
socket renews the lease; an instance that dies stops renewing, so its engines go offline when
the lease lapses. Other plugins use this rule through :class:`Presence` (:mod:`.api`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import peewee

from gateway_kernel import Param, Prepared, utcnow
from gateway_kernel.http import isoformat
from gateway_kernel.netpolicy import AddressPolicy

from .hookspecs import EngineStatus
from .models import Engine


def is_online(last_seen: dt.datetime | None, online_s: float, now: dt.datetime,
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


def engine_row_json(engine_id: str, name: str, last_seen: dt.datetime | None, online_s: float,
                    now: dt.datetime, socket_until: dt.datetime | None = None) -> dict[str, Any]:
    """The API.md engine shape ``{"id","name","status","last_seen"}`` from the columns (hot
    lists read tuples, not models)."""
    return {
        "id": engine_id,
        "name": name,
        "status": "online" if is_online(last_seen, online_s, now, socket_until) else "offline",
        "last_seen": isoformat(last_seen),
    }


def engine_json(engine: Engine, online_s: float, now: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`engine_row_json` of a model instance."""
    return engine_row_json(engine.id, engine.name, engine.last_seen, online_s, now or utcnow(),
                           engine.socket_until)


#: The columns :func:`status_of` reads, in its order.
STATUS_COLUMNS = (Engine.id, Engine.name, Engine.owner, Engine.last_seen, Engine.socket_until)
ENGINES_OF_OWNER = Prepared(lambda: (
    Engine.select(*STATUS_COLUMNS).where(Engine.owner == Param("owner")).tuples()
))
ENGINE_STATUS = Prepared(lambda: (
    Engine.select(*STATUS_COLUMNS).where(Engine.id == Param("engine_id")).limit(1).tuples()
))


def status_of(row: tuple, online_s: float, now: dt.datetime) -> EngineStatus:
    """The status of a row of :data:`STATUS_COLUMNS`."""
    engine_id, name, owner, last_seen, socket_until = row
    last_seen = Engine.last_seen.python_value(last_seen)  # SQLite answers text
    socket_until = Engine.socket_until.python_value(socket_until)
    return EngineStatus(engine_id, name, owner, is_online(last_seen, online_s, now, socket_until),
                        last_seen, socket_until is not None and socket_until > now)


class Presence:
    """The online rule with one gateway's window: the engines plugin owns one, sets the window
    from its ``FLOWORK_ENGINE_ONLINE_S`` at configure, and hands it out (:func:`.api.presence`),
    so that every plugin shows an engine's status the way engines does."""

    def __init__(self, online_s: float = 0.0) -> None:
        self.online_s = online_s  # engines sets it at configure, before any request

    def engine_json(self, engine: Engine, now: dt.datetime | None = None) -> dict[str, Any]:
        """The API.md engine shape ``{"id","name","status","last_seen"}``."""
        return engine_json(engine, self.online_s, now)

    def status_of(self, row: tuple, now: dt.datetime | None = None) -> EngineStatus:
        """:class:`EngineStatus` of a row selecting :data:`STATUS_COLUMNS`, in that order."""
        return status_of(row, self.online_s, now or utcnow())


def owned_statuses(account_id: int, online_s: float) -> list[EngineStatus]:
    now = utcnow()
    return [status_of(row, online_s, now) for row in ENGINES_OF_OWNER.run(owner=account_id)]


def engine_status(engine_id: str, online_s: float) -> EngineStatus | None:
    row = ENGINE_STATUS.first(engine_id=engine_id)
    return status_of(row, online_s, utcnow()) if row is not None else None


def socket_lease(engine_ids: list[str], holder: str, until: dt.datetime,
                 take_over: bool) -> list[str]:
    if not engine_ids:
        return []
    now = utcnow()
    where = Engine.id.in_(engine_ids)
    if not take_over:  # renewal: only what this instance holds, or what nobody holds now
        where &= ((Engine.socket_holder == holder) | Engine.socket_until.is_null()
                  | (Engine.socket_until <= now))
    Engine.update({Engine.socket_until: until, Engine.socket_holder: holder,
                   Engine.last_seen: now}).where(where).execute()
    query = Engine.select(Engine.id).where(Engine.id.in_(engine_ids)
                                           & (Engine.socket_holder == holder))
    return [engine_id for (engine_id,) in query.tuples()]


def socket_release(engine_id: str, holder: str, url: str | None) -> bool:
    now = utcnow()
    # No holder any more: a released lease is not "lapsed" (see lapsed_leases).
    changes = {Engine.socket_until: now, Engine.last_seen: now, Engine.socket_holder: None}
    if url is not None:
        changes[Engine.url] = peewee.Case(None, [(Engine.url == url, None)], Engine.url)
    updated = Engine.update(changes).where(
        (Engine.id == engine_id) & (Engine.socket_holder == holder)).execute()
    return bool(updated)


def lapsed_leases(limit: int = 500) -> list[str]:
    """Engines whose lease ran out while still held: each claimed by one caller (the holder is
    cleared in a conditional UPDATE, so concurrent instances never both announce one)."""
    now = utcnow()
    rows = (Engine.select(Engine.id, Engine.socket_holder)
            .where(Engine.socket_holder.is_null(False) & (Engine.socket_until <= now))
            .limit(limit).tuples())
    claimed = []
    for engine_id, holder in rows:
        updated = Engine.update({Engine.socket_holder: None}).where(
            (Engine.id == engine_id) & (Engine.socket_holder == holder)
            & (Engine.socket_until <= now)).execute()
        if updated:
            claimed.append(engine_id)
    return claimed


def register_url(engine_id: str, url: str, policy: AddressPolicy) -> str:
    """Store a socket-registered URL under the heartbeat's policy (``URLRefused``, a
    ValueError, when refused)."""
    normalised = policy.check_url(url)
    Engine.update({Engine.url: normalised}).where(Engine.id == engine_id).execute()
    return normalised
