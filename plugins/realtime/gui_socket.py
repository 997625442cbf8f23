"""Namespace ``/gui-socket``: the GUI signs in at connect, hears engine status and relays its
commands to engines it owns or has shared with a role that allows them (API.md "Realtime")."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from gateway_kernel.errors import GatewayError

from . import errors, relay
from .auth import authenticate, missing_credential, user_headers
from .server import (
    ACCESS_TTL_S,
    ENGINE_NS,
    GUI_NS,
    GuardedNamespace,
    GuiConn,
    TokenBucket,
    engine_room,
    user_room,
)

if TYPE_CHECKING:
    from .server import Realtime

log = logging.getLogger("gateway_plugins.realtime")


class GuiNamespace(GuardedNamespace):
    label = "GUI"

    def __init__(self, rt: Realtime) -> None:
        super().__init__(rt, GUI_NS)

    async def on_disconnect(self, sid: str) -> None:
        self.rt.guis.pop(sid, None)

    async def _error(self, sid: str, event: str, code: str, message: str) -> None:
        await self.emit(event, errors.error_payload(code, message), to=sid)

    # -- connect ---------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        rt = self.rt
        headers = user_headers(relay.unwrap(auth), environ, rt.user_headers)
        if not headers:  # the user scheme's own missing-credential answer, as over REST
            raise errors.refused(missing_credential(rt.gateway, "user"),
                                 "in the connect auth.headers")
        try:
            principal = await authenticate(rt, headers, environ, "user")
        except GatewayError as exc:
            raise errors.refused(exc) from None
        account = principal.account
        assert account is not None
        rt.guis[sid] = GuiConn(
            TokenBucket(rt.cfg.events_per_s), account.id, account.public_address,
            account.tier or "", relay.rpc_auth(headers))
        await self.enter_room(sid, user_room(account.id))
        asyncio.get_running_loop().create_task(self._initial_statuses(sid, account.id))

    async def _initial_statuses(self, sid: str, account_id: int) -> None:
        await asyncio.sleep(0)  # after the CONNECT packet
        try:
            statuses = await self.rt.run_sync(self.rt.statuses, account_id)
            await self.emit("initial_engine_statuses",
                            [self.rt.status_json(s) for s in statuses], to=sid)
        except Exception:
            log.exception("realtime: initial statuses failed")

    # -- commands --------------------------------------------------------------------------

    async def on_event(self, event: str, sid: str, data: Any) -> None:
        rt = self.rt
        conn = rt.guis.get(sid)
        if conn is None:
            return
        if not conn.bucket.take():
            if conn.bucket.should_warn():
                await self._error(sid, "error", errors.RATE_LIMITED, "Too many events; slow down")
            return
        if event == relay.RPC_COMMAND:
            engine_event = relay.RPC_EVENT
        else:
            engine_event = relay.COMMANDS.get(event)
            if engine_event is None:
                await self._error(sid, "error", errors.UNKNOWN_EVENT,
                                  f"Unknown event {str(event)[:64]!r}")
                return
        reply = relay.reply_event(engine_event)
        if relay.too_large(data, rt.cfg.max_payload):
            await self._error(sid, reply, errors.PAYLOAD_TOO_LARGE,
                              f"Payload larger than {rt.cfg.max_payload} bytes")
            return
        payload = relay.unwrap(data)
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            await self._error(sid, reply, errors.INVALID_PAYLOAD, "The payload must be an object")
            return
        if engine_event == relay.RPC_EVENT:
            target = payload.get("engine_id", payload.get("target_engine_id"))
            inner = payload.get("payload")
            payload = {"auth": dict(conn.auth), "payload": inner}
        else:
            target = payload.get("target_engine_id")
            payload = dict(payload)
        engine_id = await self._target(conn, target)
        if isinstance(engine_id, tuple):  # refused: (code, message)
            await self._error(sid, reply, *engine_id)
            return
        role, connected = await rt.access(conn.account_id, engine_id)
        if role is None or not relay.allowed(role, engine_event):
            await self._error(sid, reply, errors.NOT_FOUND, "Engine not found")
            return
        if not connected:
            await self._error(sid, reply, errors.ENGINE_OFFLINE, "The engine is offline")
            return
        payload["target_engine_id"] = engine_id
        payload["user_context"] = {"id": conn.address, "tier": conn.tier}
        payload["_target_user_id"] = conn.address
        await self.rt.sio.emit(engine_event, {"v": 2, "payload": payload},
                               to=engine_room(engine_id), namespace=ENGINE_NS)

    async def _target(self, conn: GuiConn, target: Any) -> str | tuple[str, str]:
        """The engine id a command goes to, or (code, message) when there is none."""
        if relay.is_default_target(target):
            now = time.monotonic()
            if conn.default_engine is not None and conn.default_engine[0] > now:
                return conn.default_engine[1]
            statuses = await self.rt.run_sync(self.rt.statuses, conn.account_id)
            own = [s for s in statuses if s.owner_account_id == conn.account_id and s.online]
            if not own:
                return errors.ENGINE_OFFLINE, "No online engine is available"
            engine_id = max(own, key=lambda s: (s.last_seen is not None, s.last_seen or 0)).engine_id
            conn.default_engine = (now + ACCESS_TTL_S, engine_id)
            return engine_id
        if not isinstance(target, str) or len(target) > 64:
            return errors.NOT_FOUND, "Engine not found"
        try:
            return str(uuid.UUID(target.strip()))
        except ValueError:
            return errors.NOT_FOUND, "Engine not found"
