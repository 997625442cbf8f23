"""Which engine, at which URL, a user's proxied request may reach (``flowork_resolve_engine``).

- An explicit engine id must be owned by the caller or shared with them (``flowork_engine_guest_role``),
  else 404 ``not_found``. An engine with a static URL (``FLOWORK_ENGINE_URLS``) is always
  routable; otherwise it needs a recent heartbeat with a URL, else 503 ``engine_offline``.
- No engine id: the caller's OWN most recently seen online engine that has a URL (reported or
  static), in one query; none is 503 ``engine_offline``. Never a shared engine: the request
  carries the caller's signature, and a default that picked another owner's engine would hand
  that owner the caller's credential (the account-takeover finding of issue 14). Static URLs do
  not make an engine "online" for this choice: a default must be an engine that is
  demonstrably running, never a silent guess.
"""

from __future__ import annotations

import datetime as dt

from gateway_kernel import Param, Prepared, utcnow
from gateway_kernel.errors import not_found
from gateway_kernel.http import parse_uuid
from gateway_plugins.proxy.hookspecs import EngineTarget

from . import errors
from .models import Engine
from .presence import is_online, online_condition
from .settings import EnginesConfig

# Both lookups run on every proxied request, hence Prepared (why: gateway_kernel.db.Prepared).
ENGINE_BY_ID = Prepared(lambda: (
    Engine.select(Engine.id, Engine.owner, Engine.last_seen, Engine.url, Engine.socket_until)
    .where(Engine.id == Param("engine_id"))
    .limit(1)
))
#: The default engine when nothing is shared with the caller and no URL is static (the
#: usual case); other cases build their query per request, their IN lists vary.
LATEST_OWNED = Prepared(lambda: (
    Engine.select(Engine.id, Engine.url)
    .where((Engine.owner == Param("owner")) & Engine.url.is_null(False)
           & online_condition(Param("now"), Param("since")))
    .order_by(Engine.last_seen.desc(), Engine.id)
    .limit(1)
))


def resolve_engine(cfg: EnginesConfig, hook: object, account_id: int,
                   engine_id: str | None) -> EngineTarget:
    now = utcnow()
    if engine_id is not None:
        return _by_id(cfg, hook, account_id, parse_uuid(engine_id), now)
    since = now - dt.timedelta(seconds=cfg.online_s)
    if not cfg.static_urls:
        row = LATEST_OWNED.first(owner=account_id, now=now, since=since)
        if row is None:
            raise errors.engine_offline(cfg.interval_s)
        return EngineTarget(row.id, row.url, True, False, owned=True)
    row = (
        Engine.select(Engine.id, Engine.url)
        .where((Engine.owner == account_id)
               & (Engine.url.is_null(False) | Engine.id.in_(list(cfg.static_urls)))
               & online_condition(now, since))
        .order_by(Engine.last_seen.desc(), Engine.id)
        .first()
    )
    if row is None:
        raise errors.engine_offline(cfg.interval_s)
    static = cfg.static_urls.get(row.id)
    return EngineTarget(row.id, static or row.url, True, static is not None, owned=True)


def _by_id(cfg: EnginesConfig, hook: object, account_id: int, eid: str,
           now: dt.datetime) -> EngineTarget:
    row = ENGINE_BY_ID.first(engine_id=eid)
    if row is None:
        raise not_found()
    owned = row.owner_id == account_id
    if not owned and hook.flowork_engine_guest_role(  # type: ignore[attr-defined]
        engine_id=eid, account_id=account_id
    ) is None:
        raise not_found()
    online = is_online(row.last_seen, cfg.online_s, now, row.socket_until)
    static = cfg.static_urls.get(eid)
    if static is not None:
        return EngineTarget(eid, static, online, True, owned)
    if online and row.url:
        return EngineTarget(eid, row.url, True, False, owned)
    raise errors.engine_offline(cfg.interval_s)
