"""Engine shares: list/create/delete (seed paths and the GUI's compatibility aliases), and
the engines shared with me.

Every route answers 404 ``not_found`` unless the caller owns the engine, so a stranger learns
nothing about engines that exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon
import peewee

from gateway_kernel import Account, utcnow
from gateway_kernel.db import is_postgres
from gateway_kernel.errors import bad_request, conflict, limit_reached, not_found
from gateway_kernel.http import isoformat, parse_uuid, read_json_object, require_str, send_json
from gateway_plugins.engines.api import Engine, Presence

from .. import errors
from ..models import EngineShare

if TYPE_CHECKING:
    from gateway_kernel import Gateway

ROLES = ("reader", "runner", "admin")
DEFAULT_ROLE = "runner"
_MAX_IDENTIFIER = 200


def _caller(req: falcon.Request) -> Account:
    return req.context.principal.account


def owned_engine(engine_id: str, owner: Account) -> Engine:
    """The engine ``engine_id`` if ``owner`` owns it; 404 otherwise (malformed ids too)."""
    engine = Engine.get_or_none((Engine.id == parse_uuid(engine_id)) & (Engine.owner == owner.id))
    if engine is None:
        raise not_found("Engine not found")
    return engine


def share_json(share: EngineShare, guest: Account) -> dict[str, Any]:
    return {
        "user_id": guest.public_address,
        "public_address": guest.public_address,
        "username": guest.username,
        "email": guest.email,
        "role": share.role,
        "shared_at": isoformat(share.created_at),
    }


def list_shares(engine: Engine) -> list[dict[str, Any]]:
    query = (
        EngineShare.select(EngineShare, Account)
        .join(Account)
        .where(EngineShare.engine == engine.id)
        .order_by(EngineShare.created_at, EngineShare.id)
    )
    return [share_json(share, share.account) for share in query]


def parse_role(body: dict[str, Any]) -> str:
    role = body.get("role")
    if role is None:
        return DEFAULT_ROLE
    if role not in ROLES:
        raise bad_request(f"'role' must be one of {', '.join(ROLES)}")
    return role


def _shares_left(engine: Engine, limit: int) -> None:
    if EngineShare.select().where(EngineShare.engine == engine.id).count() >= limit:
        raise limit_reached("shares per engine", limit, "FLOWORK_LIMIT_SHARES_PER_ENGINE")


def create_share(gateway: Gateway, engine: Engine, owner: Account, identifier: str,
                 role: str, limit: int) -> dict[str, Any]:
    """Share ``engine`` with the account named by ``identifier``; the POST answer.

    At most ``limit`` shares per engine: checked before the guest's account is looked up
    (which may create it), and again, exactly, with the engine's row locked."""
    _shares_left(engine, limit)
    guest = gateway.find_account(identifier)  # may create a well-formed, unseen address
    if guest is None:
        raise errors.user_not_found()
    if guest.id == owner.id:
        raise errors.cannot_share_with_self()
    try:
        # A savepoint, so the unique violation does not poison an outer transaction
        # (PostgreSQL) and concurrent duplicates give exactly one success.
        with gateway.db.atomic():
            if is_postgres(gateway.db):  # SQLite: the IMMEDIATE transaction serialises
                Engine.select(Engine.id).where(Engine.id == engine.id).for_update().execute()
            _shares_left(engine, limit)
            share = EngineShare.create(engine=engine.id, account=guest.id, role=role)
    except peewee.IntegrityError:
        # The unique pair (already shared) or the foreign key (the engine was deleted by a
        # concurrent request): the second is a 404 like any engine the caller does not have.
        if not Engine.select(Engine.id).where(Engine.id == engine.id).exists():
            raise not_found("Engine not found") from None
        raise conflict("The engine is already shared with this user") from None
    gateway.hook.flowork_engine_shares_changed(engine_id=engine.id, account_id=guest.id,
                                               change="created")
    return {
        "message": f"Engine shared with {guest.username}",
        "share_id": share.share_id,
        "shared_with": share_json(share, guest),
    }


def delete_share(gateway: Gateway, engine: Engine, shared_user_id: str) -> None:
    """Remove the share of ``engine`` with the user whose address is ``shared_user_id``."""
    value = shared_user_id.strip()
    # No address has control characters (and PostgreSQL refuses NUL in a query).
    if not value or len(value) > _MAX_IDENTIFIER or not value.isprintable():
        raise not_found("Share not found")
    # Addresses arrive in any case (the list shows checksummed ones; stored canonical).
    share = (
        EngineShare.select(EngineShare.id, EngineShare.account)
        .join(Account)
        .where(
            (EngineShare.engine == engine.id)
            & ((Account.address == value.lower()) | (Account.public_address == value))
        )
        .first()
    )
    if share is None:
        raise not_found("Share not found")
    if EngineShare.delete().where(EngineShare.id == share.id).execute():
        gateway.hook.flowork_engine_shares_changed(engine_id=engine.id,
                                                   account_id=share.account_id, change="revoked")


# -- resources -------------------------------------------------------------------------------
# Each route gets its own instance (kernel rule); the classes only differ in which methods
# they serve and where the identifier comes from, the rules live in the functions above.


class ListSharesResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response, engine_id: str) -> None:
        engine = owned_engine(engine_id, _caller(req))
        send_json(resp, list_shares(engine))


class CreateShareResource:
    """POST: ``identifier_field`` names the body key holding the username or address."""

    def __init__(self, gateway: Gateway, identifier_field: str, max_shares: int) -> None:
        self.gateway = gateway
        self.identifier_field = identifier_field
        self.max_shares = max_shares

    def on_post(self, req: falcon.Request, resp: falcon.Response, engine_id: str) -> None:
        owner = _caller(req)
        engine = owned_engine(engine_id, owner)
        body = read_json_object(req)
        identifier = require_str(body, self.identifier_field, max_len=_MAX_IDENTIFIER)
        role = parse_role(body)
        send_json(resp, create_share(self.gateway, engine, owner, identifier, role,
                                     self.max_shares), 201)


class EngineSharesResource(ListSharesResource, CreateShareResource):
    """GET and POST /engines/{engine_id}/shares."""


class DeleteShareResource:
    """DELETE …/shares/{shared_user_id}."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_delete(self, req: falcon.Request, resp: falcon.Response, engine_id: str,
                  shared_user_id: str) -> None:
        engine = owned_engine(engine_id, _caller(req))
        delete_share(self.gateway, engine, shared_user_id)
        send_json(resp, {"message": "Share removed"})


class DeleteShareByBodyResource:
    """POST /user/engines/{engine_id}/shares/delete with ``{"user_id"}`` (GUI alias)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response, engine_id: str) -> None:
        engine = owned_engine(engine_id, _caller(req))
        body = read_json_object(req)
        delete_share(self.gateway, engine, require_str(body, "user_id", max_len=_MAX_IDENTIFIER))
        send_json(resp, {"message": "Share removed"})


class SharedEnginesResource:
    """GET /user/shared-engines: engines other users shared with the caller."""

    def __init__(self, presence: Presence) -> None:
        self.presence = presence

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        owner_alias = Account.alias()
        query = (
            EngineShare.select(EngineShare, Engine, owner_alias)
            .join(Engine)
            .join(owner_alias, on=(Engine.owner == owner_alias.id))
            .where(EngineShare.account == _caller(req).id)
            .order_by(peewee.fn.LOWER(Engine.name), Engine.id)
        )
        now = utcnow()
        result = []
        for share in query:
            engine = share.engine
            owner = engine.owner
            # The engines plugin's shape and online rule, so both lists agree.
            result.append({
                **self.presence.engine_json(engine, now),
                "owner": {
                    "user_id": owner.public_address,
                    "username": owner.username,
                    "public_address": owner.public_address,
                },
            })
        send_json(resp, result)
