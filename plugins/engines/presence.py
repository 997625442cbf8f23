"""Realtime presence, as the engines plugin stores it (the ``flowork_engine_*`` socket hooks).

An engine is online while a realtime socket holds a lease on it (``socket_until`` in the
future), or, when no socket has held it since its last heartbeat, while its heartbeat is
fresh (:func:`.models.is_online`). The instance holding the socket renews the lease; an
instance that dies stops renewing, so its engines go offline when the lease lapses.
"""

from __future__ import annotations

import datetime as dt

import peewee

from gateway_kernel import Param, Prepared, utcnow
from gateway_kernel.netpolicy import AddressPolicy

from .hookspecs import EngineStatus
from .models import Engine, is_online

_STATUS_COLUMNS = (Engine.id, Engine.name, Engine.owner, Engine.last_seen, Engine.socket_until)
ENGINES_OF_OWNER = Prepared(lambda: (
    Engine.select(*_STATUS_COLUMNS).where(Engine.owner == Param("owner")).tuples()
))
ENGINE_STATUS = Prepared(lambda: (
    Engine.select(*_STATUS_COLUMNS).where(Engine.id == Param("engine_id")).limit(1).tuples()
))


def status_of(row: tuple, online_s: int, now: dt.datetime) -> EngineStatus:
    engine_id, name, owner, last_seen, socket_until = row
    last_seen = Engine.last_seen.python_value(last_seen)  # SQLite answers text
    socket_until = Engine.socket_until.python_value(socket_until)
    return EngineStatus(engine_id, name, owner, is_online(last_seen, online_s, now, socket_until),
                        last_seen, socket_until is not None and socket_until > now)


def owned_statuses(account_id: int, online_s: int) -> list[EngineStatus]:
    now = utcnow()
    return [status_of(row, online_s, now) for row in ENGINES_OF_OWNER.run(owner=account_id)]


def engine_status(engine_id: str, online_s: int) -> EngineStatus | None:
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
