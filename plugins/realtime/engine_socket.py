"""Namespace ``/engine-socket``: Core engines sign in with their token, register their URL,
report vitals and answer the GUI's commands (API.md "Realtime")."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from gateway_kernel import Account
from gateway_kernel.errors import GatewayError

from . import errors, relay
from .auth import authenticate
from .server import (
    ALL_ENGINES,
    ENGINE_NS,
    EngineConn,
    GuardedNamespace,
    TokenBucket,
    engine_room,
    user_room,
)

if TYPE_CHECKING:
    from .server import Realtime

log = logging.getLogger("gateway_plugins.realtime")

_URL_EVENTS = {"register_engine_http_info": "http_url", "engine_ready": "internal_api_url"}


class EngineNamespace(GuardedNamespace):
    label = "engine"

    def __init__(self, rt: Realtime) -> None:
        super().__init__(rt, ENGINE_NS)

    async def _error(self, sid: str, code: str, message: str) -> None:
        await self.emit("error", errors.error_payload(code, message), to=sid)

    # -- connect and sign-in ---------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        rt = self.rt
        conn = EngineConn(TokenBucket(rt.cfg.events_per_s))
        credentials = relay.unwrap(auth)
        if isinstance(credentials, dict) and credentials.get("token") is not None:
            try:
                engine_id, owner_id = await self._authenticate(credentials, environ)
            except GatewayError as exc:
                raise errors.refused(exc) from None
            rt.engines[sid] = conn
            # After the CONNECT packet: the client hears auth_success once connected.
            asyncio.get_running_loop().create_task(self._signed_in(sid, conn, engine_id, owner_id))
            return
        rt.engines[sid] = conn
        conn.deadline = asyncio.get_running_loop().call_later(
            rt.cfg.auth_timeout_s, lambda: asyncio.ensure_future(self._auth_deadline(sid)))

    async def _authenticate(self, credentials: dict, environ: dict) -> tuple[str, int]:
        """(engine id, owner account id) for a token, through the kernel's engine scheme."""
        token = credentials.get("token")
        wanted = credentials.get("engine_id")
        if not isinstance(token, str) or (wanted is not None and not isinstance(wanted, str)):
            raise errors.invalid_engine_token("token must be a string")
        principal = await authenticate(self.rt, {self.rt.engine_token_header: token}, environ,
                                       "engine")
        if wanted is not None and wanted.strip().lower() != principal.engine_id:
            raise errors.invalid_engine_token("engine_id is not the engine of this token")
        return principal.engine_id, int(principal.claims["owner_account_id"])

    async def _auth_deadline(self, sid: str) -> None:
        conn = self.rt.engines.get(sid)
        if conn is not None and conn.engine_id is None:
            await self._auth_failed(sid, errors.AUTH_TIMEOUT,
                                    "No auth event within the sign-in deadline")

    async def _auth_failed(self, sid: str, code: str, message: str) -> None:
        await self.emit("auth_failed", errors.auth_failed_payload(code, message), to=sid)
        await self.disconnect(sid)

    async def _signed_in(self, sid: str, conn: EngineConn, engine_id: str, owner_id: int) -> None:
        rt = self.rt
        await asyncio.sleep(0)
        leased = await rt.run_sync(functools.partial(
            rt.gateway.hook.flowork_engine_socket_lease, engine_ids=[engine_id],
            holder=rt.instance_id, until=rt.lease_until(), take_over=True))
        owner = await rt.run_sync(Account.get_or_none, Account.id == owner_id)
        if not leased or owner is None or rt.engines.get(sid) is not conn:
            # Deleted or rotated meanwhile, or the socket already left.
            if rt.engines.get(sid) is conn:
                await self._auth_failed(sid, errors.INVALID_ENGINE_TOKEN, "Engine token is invalid")
            return
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        conn.engine_id = engine_id
        conn.owner_id = owner_id
        sids = rt.engine_sids.setdefault(engine_id, set())
        first = not sids
        sids.add(sid)
        await self.enter_room(sid, engine_room(engine_id))
        await self.enter_room(sid, ALL_ENGINES)
        await self.emit("auth_success", {"message": "Engine authenticated",
                                         "user_id": owner.public_address,
                                         "engine_id": engine_id}, to=sid)
        if first:
            await rt.push_status(engine_id)

    # -- disconnect ------------------------------------------------------------------------

    async def on_disconnect(self, sid: str) -> None:
        rt = self.rt
        conn = rt.engines.pop(sid, None)
        if conn is None:
            return
        if conn.deadline is not None:
            conn.deadline.cancel()
        engine_id = conn.engine_id
        if engine_id is None:
            return
        sids = rt.engine_sids.get(engine_id)
        if sids is not None:
            sids.discard(sid)
            if sids:
                return  # another socket of this engine lives here
            rt.engine_sids.pop(engine_id, None)
        if rt.closing:
            return  # released at shutdown
        released = await rt.run_sync(functools.partial(
            rt.gateway.hook.flowork_engine_socket_release, engine_id=engine_id,
            holder=rt.instance_id, url=conn.url))
        rt.vitals.pop(engine_id, None)
        if released:
            await rt.push_status(engine_id)

    async def refuse_engine(self, engine_id: str) -> None:
        """Token reset or engine deleted: refuse and close this instance's sockets of it."""
        for sid in list(self.rt.engine_sids.get(engine_id, ())):
            await self._auth_failed(sid, errors.INVALID_ENGINE_TOKEN,
                                    "Engine token was reset or the engine was deleted")

    # -- events ----------------------------------------------------------------------------

    async def on_event(self, event: str, sid: str, data: Any) -> None:
        rt = self.rt
        conn = rt.engines.get(sid)
        if conn is None:
            return
        if not conn.bucket.take():
            if conn.bucket.should_warn():
                await self._error(sid, errors.RATE_LIMITED, "Too many events; slow down")
            return
        if event == "auth":
            await self._on_auth(sid, conn, data)
            return
        if conn.engine_id is None:
            await self._error(sid, errors.NOT_AUTHENTICATED, "Sign in first (auth event)")
            return
        if relay.too_large(data, rt.cfg.max_payload):
            await self._error(sid, errors.PAYLOAD_TOO_LARGE,
                              f"Payload larger than {rt.cfg.max_payload} bytes")
            return
        payload = relay.unwrap(data)
        if event in _URL_EVENTS:
            await self._register_url(sid, conn, payload, _URL_EVENTS[event])
        elif event == "engine_vitals_update":
            vitals = payload if isinstance(payload, dict) else {}
            vitals = {k: v for k, v in vitals.items() if k not in ("engine_id", "id")}
            rt.vitals[conn.engine_id] = vitals
            await rt.push_to_audience(conn.engine_id, "engine_vitals_update",
                                      {"engine_id": conn.engine_id, "vitals": vitals})
        elif event == relay.FORWARD_EVENT:
            await self._forward(sid, conn, payload)
        elif relay.is_engine_reply(event):
            target = payload.get("_target_user_id") if isinstance(payload, dict) else None
            await self._reply(conn, event, data, target)
        else:
            await self._error(sid, errors.UNKNOWN_EVENT, f"Unknown event {event[:64]!r}")

    async def _on_auth(self, sid: str, conn: EngineConn, data: Any) -> None:
        if conn.engine_id is not None:
            return  # already signed in
        credentials = relay.unwrap(data)
        if not isinstance(credentials, dict):
            await self._auth_failed(sid, errors.INVALID_ENGINE_TOKEN, "auth needs {token, engine_id}")
            return
        environ = self.rt.sio.get_environ(sid, namespace=ENGINE_NS) or {}
        try:
            engine_id, owner_id = await self._authenticate(credentials, environ)
        except GatewayError as exc:
            await self._auth_failed(sid, exc.code, exc.message)
            return
        await self._signed_in(sid, conn, engine_id, owner_id)

    async def _register_url(self, sid: str, conn: EngineConn, payload: Any, key: str) -> None:
        url = payload.get(key) if isinstance(payload, dict) else None
        if not isinstance(url, str) or not url:
            log.info("realtime: engine %s sent no %s", conn.engine_id, key)
            return
        try:
            conn.url = await self.rt.run_sync(functools.partial(
                self.rt.gateway.hook.flowork_engine_register_url, engine_id=conn.engine_id,
                url=url))
        except ValueError as exc:
            # Ignored and logged (API.md): the engine stays connected, just not routable.
            log.warning("realtime: engine %s registered a refused URL: %s", conn.engine_id, exc)

    async def _forward(self, sid: str, conn: EngineConn, payload: Any) -> None:
        if not isinstance(payload, dict):
            await self._error(sid, errors.INVALID_PAYLOAD, "forward_event_to_gui needs an object")
            return
        name = payload.get("event_name")
        if name not in relay.GUI_EVENTS:
            await self._error(sid, errors.UNKNOWN_EVENT, "event_name is not a GUI event")
            return
        event_data = payload.get("event_data")
        target = payload.get("_target_user_id") or payload.get("user_id")
        if target is None and isinstance(event_data, dict):
            target = event_data.get("_target_user_id")
        await self._reply(conn, name, event_data, target)

    async def _reply(self, conn: EngineConn, event: str, data: Any, target: Any) -> None:
        """To the user the engine names if owner or guest, else to the owner; nobody else."""
        assert conn.engine_id is not None
        audience = await self.rt.audience(conn.engine_id)
        if audience is None:
            return
        account_id = audience.owner_id
        if isinstance(target, str):
            account_id = audience.guests.get(target.lower(), audience.owner_id)
        await self.rt.sio.emit(event, data, to=user_room(account_id), namespace="/gui-socket")

