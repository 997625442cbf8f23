"""The owner's engine routes (user principal): list, register, delete, reset token, rename.

Every owner route checks ownership inside the one statement that acts (``WHERE id = ? AND
owner = ?``), so "not yours" and "does not exist" are the same 404 and cost one query.
"""

from __future__ import annotations

import re
from typing import Any

import falcon
import peewee

from gateway_kernel import Gateway, Param, Prepared, utcnow
from gateway_kernel.accounts import Account, lock_account
from gateway_kernel.db import is_postgres
from gateway_kernel.errors import bad_request, limit_reached, not_found
from gateway_kernel.http import parse_uuid, read_json_object, require_str, send_json

from ..models import Engine
from ..presence import engine_json, engine_row_json
from ..settings import EnginesConfig
from ..tokens import new_engine_token, token_digest

NAME_MAX = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def account_of(req: falcon.Request) -> Account:
    """The signed-in user's account (user routes only)."""
    return req.context.principal.account


def engine_name(body: dict[str, Any]) -> str:
    """``body["name"]`` trimmed, 1-100 characters, no control characters; else 400."""
    name = require_str(body, "name", max_len=NAME_MAX)
    if _CONTROL.search(name):
        raise bad_request("'name' must not contain control characters")
    return name


class _Resource:
    def __init__(self, gateway: Gateway, cfg: EnginesConfig) -> None:
        self.gateway = gateway
        self.cfg = cfg


#: Runs on every dashboard poll, hence Prepared (why: gateway_kernel.db.Prepared).
ENGINES_OF_OWNER = Prepared(lambda: (
    Engine.select(Engine.id, Engine.name, Engine.last_seen, Engine.socket_until)
    .where(Engine.owner == Param("owner"))
    .order_by(peewee.fn.LOWER(Engine.name), Engine.id)
))


class EnginesCollection(_Resource):
    """GET/POST /user/engines."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # The raw cursor: peewee's result wrapper costs more than the three conversions.
        rows = ENGINES_OF_OWNER.cursor(owner=account_of(req).id).fetchall()
        now = utcnow()
        online_s = self.cfg.online_s
        to_datetime = Engine.last_seen.python_value  # SQLite returns text, PostgreSQL datetimes
        send_json(resp, [engine_row_json(eid, name, to_datetime(last_seen), online_s, now,
                                         to_datetime(socket_until))
                         for eid, name, last_seen, socket_until in rows])

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        name = engine_name(read_json_object(req))
        token = new_engine_token()
        owner_id = account_of(req).id
        with self.gateway.db.atomic():
            lock_account(self.gateway.db, owner_id)  # concurrent creates count each other
            if Engine.select().where(Engine.owner == owner_id).count() >= self.cfg.max_engines:
                raise limit_reached("engines per user", self.cfg.max_engines,
                                    "FLOWORK_LIMIT_ENGINES_PER_USER")
            engine = Engine.create(owner=owner_id, name=name, token_digest=token_digest(token))
        # The plaintext token appears here once; only its digest is stored.
        send_json(resp, {**engine_json(engine, self.cfg.online_s), "raw_token": token}, 201)


class EngineItem(_Resource):
    """DELETE /user/engines/{engine_id}: shares, claims and presence go with it (cascade)."""

    def on_delete(self, req: falcon.Request, resp: falcon.Response, engine_id: str) -> None:
        eid = parse_uuid(engine_id)
        hook = self.gateway.hook
        # Read before the cascade removes them: the guests lose the engine too.
        guests = [g.account.id for found in hook.flowork_engine_guests(engine_id=eid) for g in found]
        deleted = Engine.delete().where(
            (Engine.id == eid) & (Engine.owner == account_of(req).id)
        ).execute()
        if not deleted:
            raise not_found()
        hook.flowork_engine_credentials_revoked(engine_id=eid, owner_account_id=account_of(req).id,
                                                deleted=True)
        for guest_id in guests:
            hook.flowork_engine_shares_changed(engine_id=eid, account_id=guest_id, change="revoked")
        send_json(resp, {"message": "Engine deleted"})


class ResetToken(_Resource):
    """POST /user/engines/{engine_id}/reset-token: the old token fails from now on."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, engine_id: str) -> None:
        eid = parse_uuid(engine_id)
        db = self.gateway.db
        # Resets of one engine run one at a time (the row lock on PostgreSQL; SQLite's
        # IMMEDIATE transaction holds the write lock), and the token is minted inside, so
        # the token of the last reset to take effect is the one that works.
        with db.atomic():
            owned = Engine.select(Engine.id).where((Engine.id == eid) & (Engine.owner == account_of(req).id))
            if is_postgres(db):
                owned = owned.for_update()
            if owned.first() is None:
                raise not_found()
            token = new_engine_token()
            Engine.update(token_digest=token_digest(token)).where(Engine.id == eid).execute()
        self.gateway.hook.flowork_engine_credentials_revoked(
            engine_id=eid, owner_account_id=account_of(req).id, deleted=False)
        send_json(resp, {"message": "Engine token reset", "token": token, "engine_id": eid})


class UpdateName(_Resource):
    """PUT /user/engines/{engine_id}/update-name."""

    def on_put(self, req: falcon.Request, resp: falcon.Response, engine_id: str) -> None:
        eid = parse_uuid(engine_id)
        name = engine_name(read_json_object(req))
        updated = Engine.update(name=name).where(
            (Engine.id == eid) & (Engine.owner == account_of(req).id)
        ).execute()
        if not updated:
            raise not_found()
        send_json(resp, {"message": "Engine name updated", "id": eid, "name": name})
