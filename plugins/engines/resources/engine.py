"""The engine's own routes (engine principal): its auth info and its heartbeat."""

from __future__ import annotations

from typing import Any

import falcon

from gateway_kernel import Gateway, Param, Prepared, utcnow
from gateway_kernel.errors import bad_request
from gateway_kernel.http import read_json_object, send_json
from gateway_kernel.netpolicy import URLRefused, for_gateway

from .. import errors, queries
from ..models import Engine
from ..settings import EnginesConfig


def engine_id_of(req: falcon.Request) -> str:
    """The calling engine's id (engine routes only)."""
    return req.context.principal.engine_id


#: Heartbeat without a URL change (the usual one): one prepared UPDATE. A heartbeat puts the
#: engine back on the heartbeat rule (a socket that closed earlier no longer counts).
TOUCH_ENGINE = Prepared(lambda: (
    Engine.update({Engine.last_seen: Param("now"), Engine.socket_until: None})
    .where(Engine.id == Param("engine_id"))
))


class EngineAuthInfo:
    """GET /engine/get-engine-auth-info: who may use this engine, and in which role."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        eid = engine_id_of(req)
        owner = queries.owner_address(eid)
        if owner is None:
            raise errors.invalid_engine_token()
        roles: dict[str, str] = {owner: "owner"}
        for guests in self.gateway.hook.flowork_engine_guests(engine_id=eid):
            for guest in guests:
                roles.setdefault(guest.account.address.lower(), guest.role)
        send_json(resp, {"engine_id": eid, "authorized_addresses": list(roles), "roles": roles})


class Heartbeat:
    """POST /engine/heartbeat {"url"?, "vitals"?}: one UPDATE marks the engine online.

    ``url`` absent keeps the stored URL; ``null`` or ``""`` clears it; otherwise it must pass
    the gateway's address policy (:mod:`gateway_kernel.netpolicy`). ``vitals`` (an object) is
    accepted and not stored.
    """

    def __init__(self, gateway: Gateway, cfg: EnginesConfig) -> None:
        self.gateway = gateway
        self.cfg = cfg

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json_object(req)
        vitals = body.get("vitals")
        if vitals is not None and not isinstance(vitals, dict):
            raise bad_request("'vitals' must be an object")
        changes: dict[Any, Any] = {Engine.last_seen: utcnow(), Engine.socket_until: None}
        if "url" in body:
            url = body["url"]
            if url is None or url == "":
                changes[Engine.url] = None
            elif not isinstance(url, str):
                raise bad_request("'url' must be a string")
            else:
                try:
                    changes[Engine.url] = for_gateway(self.gateway).check_url(url)
                except URLRefused as exc:
                    raise errors.invalid_engine_url(exc) from None
        eid = engine_id_of(req)
        if len(changes) == 2:
            updated = TOUCH_ENGINE.cursor(now=changes[Engine.last_seen], engine_id=eid).rowcount
        else:
            updated = Engine.update(changes).where(Engine.id == eid).execute()
        if not updated:
            raise errors.invalid_engine_token()
        send_json(resp, {"status": "ok", "engine_id": eid, "interval_s": self.cfg.interval_s})
