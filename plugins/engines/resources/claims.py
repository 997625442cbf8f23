"""The dashboard claim flow (API.md "Claim flow", modelled on RFC 8628's device grant).

1. The engine's dashboard makes a request id (UUID) and sends the user to the web GUI.
2. ``POST /user/engines/select-for-auth`` (owner): store a pending claim: SHA-256 of the
   request id, the engine, an expiry. Nothing is rotated, so the running engine keeps working.
3. ``GET /engine/claim-token?req_id=`` (service): rotate the engine's token and hand it over,
   once. A conditional ``UPDATE … SET used = true WHERE used = false AND expires_at > now``
   decides the winner by its row count, in the same transaction as the rotation, so two
   concurrent claims (on any instances) give exactly one token.

Claims stay in the table until ``PURGE_AFTER`` past their expiry, so that a late poll is told
``expired_token`` rather than ``authorization_pending``; older ones are purged on every new
approval (indexed ``DELETE``), which bounds the table by the approval rate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

import falcon
import peewee

from gateway_kernel import Gateway, utcnow
from gateway_kernel.db import run_transaction
from gateway_kernel.errors import bad_request, conflict, not_found
from gateway_kernel.http import parse_uuid, read_json_object, send_json

from ..errors import authorization_pending, expired_token
from ..models import Engine, EngineClaim
from ..settings import EnginesConfig
from ..tokens import new_engine_token, token_digest
from .owner import account_of

PURGE_AFTER = dt.timedelta(hours=1)


def request_digest(request_id: Any, field: str) -> str:
    """SHA-256 of the canonical form of a request id (a UUID), else 400 invalid_body."""
    try:
        canonical = str(uuid.UUID(request_id))
    except (TypeError, ValueError, AttributeError):
        raise bad_request(f"'{field}' must be a UUID") from None
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def purge_expired(now: dt.datetime) -> int:
    return EngineClaim.delete().where(EngineClaim.expires_at < now - PURGE_AFTER).execute()


class SelectForAuth:
    """POST /user/engines/select-for-auth {"request_id", "engine_id"} (owner only)."""

    def __init__(self, gateway: Gateway, cfg: EnginesConfig) -> None:
        self.gateway = gateway
        self.cfg = cfg

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json_object(req)
        digest = request_digest(body.get("request_id"), "request_id")
        engine_id = body.get("engine_id")
        if not isinstance(engine_id, str):
            raise bad_request("'engine_id' is required and must be a string")
        eid = parse_uuid(engine_id)
        owner_id = account_of(req).id
        if not Engine.select(Engine.id).where(
            (Engine.id == eid) & (Engine.owner == owner_id)
        ).exists():
            raise not_found()
        now = utcnow()
        expires = now + dt.timedelta(seconds=self.cfg.claim_ttl_s)
        purge_expired(now)
        # Approving the same request again (a double click) re-points and extends it, but
        # only while unclaimed and only if it is already this owner's; anything else is 409.
        owned = Engine.select(Engine.id).where(Engine.owner == owner_id)

        def reapprove() -> int:
            return EngineClaim.update(engine=eid, expires_at=expires).where(
                (EngineClaim.request_digest == digest)
                & (EngineClaim.used == False)  # noqa: E712 - SQL comparison
                & EngineClaim.engine.in_(owned)
            ).execute()

        if not reapprove():
            try:
                with self.gateway.db.atomic():
                    EngineClaim.create(request_digest=digest, engine=eid, expires_at=expires)
            except peewee.IntegrityError:
                # A concurrent approval of the same request (a double click) may have
                # inserted it first: that one is re-approved like a sequential second click.
                if not reapprove():
                    raise conflict("This request has already been handled") from None
        send_json(resp, {"status": "success", "message": "Engine selected; the dashboard "
                         "can now claim its token"})


class ClaimToken:
    """GET /engine/claim-token?req_id= (service principal): the one-time token handover."""

    def __init__(self, gateway: Gateway, cfg: EnginesConfig) -> None:
        self.gateway = gateway
        self.cfg = cfg

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        req_id = req.get_param("req_id")
        if not req_id:
            raise bad_request("Query parameter 'req_id' is required")
        digest = request_digest(req_id, "req_id")
        now = utcnow()
        claim = (
            EngineClaim.select(EngineClaim.engine, EngineClaim.used, EngineClaim.expires_at)
            .where(EngineClaim.request_digest == digest)
            .first()
        )
        if claim is None:
            raise authorization_pending()
        if claim.used or claim.expires_at <= now:
            raise expired_token()
        engine_id = claim.engine_id
        token = new_engine_token()

        def redeem() -> None:
            won = EngineClaim.update(used=True).where(
                (EngineClaim.request_digest == digest)
                & (EngineClaim.used == False)  # noqa: E712 - SQL comparison
                & (EngineClaim.expires_at > now)
            ).execute()
            if won != 1:  # another claim got there first
                raise expired_token()
            rotated = Engine.update(token_digest=token_digest(token)).where(
                Engine.id == engine_id
            ).execute()
            if rotated != 1:  # engine deleted meanwhile; the raise rolls the claim back
                raise authorization_pending()

        run_transaction(self.gateway.db, redeem)
        send_json(resp, {"status": "success", "token": token, "engine_id": engine_id})
