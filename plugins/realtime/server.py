"""The Socket.IO server: one python-socketio AsyncServer with the two namespaces, mounted on
``/socket.io/`` and ``/api/socket.io/`` in front of the kernel's ASGI app.

State that must be shared lives elsewhere: presence in the database (through the engines
plugin's hooks), rooms and pushes in the Socket.IO manager (Redis with ``FLOWORK_REDIS_URL``,
else memory). What stays here is per-process: the sockets this instance holds, and short-lived
caches of who may use an engine (cleared on every share change, on every instance).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import socketio

from gateway_kernel import Account, utcnow

from . import errors
from .auth import SafeJSON
from .settings import RealtimeConfig

if TYPE_CHECKING:
    from gateway_kernel import Gateway

log = logging.getLogger("gateway_plugins.realtime")

PATHS = ("/socket.io/", "/api/socket.io/")
ENGINE_NS = "/engine-socket"
GUI_NS = "/gui-socket"
#: A namespace no client can join: its "emits" are instructions to every instance's server
#: (through the manager, so they cross instances with Redis), handled by ``on_control``.
CONTROL_NS = "/_flowork-control"
ALL_ENGINES = "engines"
#: How long a decision about who may use an engine is reused (share changes clear it at once;
#: the TTL bounds what an engine going offline elsewhere, which sends no event, can leave stale).
ACCESS_TTL_S = 1.0
#: How long an engine's owner and guests are reused for routing replies and pushes: every share
#: change clears it on every instance, so this only bounds a lost control message. Vitals
#: arrive every 5 s per engine; a short TTL would cost queries for each.
AUDIENCE_TTL_S = 10.0
#: Bound on each cache (entries are only ever re-read, so dropping them all is safe).
CACHE_MAX = 100_000


def engine_room(engine_id: str) -> str:
    return "e:" + engine_id


def user_room(account_id: int) -> str:
    return f"u:{account_id}"


class LocalManager(socketio.AsyncManager):
    """In-memory rooms (one instance), with control messages handled locally."""

    def __init__(self, on_control: Callable[[Any], Awaitable[None]]) -> None:
        super().__init__()
        self.on_control = on_control

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None,
                   skip_sid: Any = None, callback: Any = None, to: Any = None,
                   **kwargs: Any) -> None:
        if namespace == CONTROL_NS:
            await self.on_control(data)
            return
        await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                           callback=callback, to=to, **kwargs)


class RedisManager(socketio.AsyncRedisManager):
    """Rooms shared through Redis; control messages reach every instance's ``on_control``
    (the pub/sub manager hands every emit, local or remote, to ``_handle_emit``)."""

    def __init__(self, url: str, channel: str,
                 on_control: Callable[[Any], Awaitable[None]]) -> None:
        super().__init__(url, channel=channel)
        self.on_control = on_control

    async def _handle_emit(self, message: dict) -> None:
        if message.get("namespace") == CONTROL_NS:
            data = message.get("data")
            if isinstance(data, list) and len(data) == 1:
                data = data[0]
            await self.on_control(data)
            return
        await super()._handle_emit(message)


class TokenBucket:
    """``rate`` events per second, bursts of ``2 * rate``."""

    __slots__ = ("burst", "last", "rate", "tokens", "warned_at")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = 2 * rate
        self.tokens = self.burst
        self.last = time.monotonic()
        self.warned_at = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def should_warn(self) -> bool:
        """At most one rate-limit error event per second per socket."""
        now = time.monotonic()
        if now - self.warned_at >= 1.0:
            self.warned_at = now
            return True
        return False


@dataclass
class EngineConn:
    """One engine socket on this instance."""

    bucket: TokenBucket
    engine_id: str | None = None  # set once signed in
    owner_id: int = 0
    url: str | None = None  # the URL this socket registered
    deadline: asyncio.TimerHandle | None = None


@dataclass
class GuiConn:
    """One GUI socket on this instance."""

    bucket: TokenBucket
    account_id: int
    address: str  # checksummed
    tier: str
    auth: dict[str, str]  # the sign-in's address, message, signature (for rpc relays)
    default_engine: tuple[float, str] | None = None  # (until, engine id): the default target


@dataclass
class Audience:
    """Who hears about an engine: its owner and guests (cached for AUDIENCE_TTL_S)."""

    owner_id: int
    owner_address: str  # lowercase
    guests: dict[str, int]  # lowercase address → account id
    roles: dict[int, str]  # account id → role
    expires: float = field(default=0.0)


class GuardedNamespace(socketio.AsyncNamespace):
    """A namespace whose every event goes through :meth:`trigger_event`: the one place that
    never lets an exception escape into python-socketio (which would drop the connection)
    and answers a failed event with an ``error`` event."""

    label = ""

    def __init__(self, rt: Realtime, namespace: str) -> None:
        super().__init__(namespace)
        self.rt = rt

    async def trigger_event(self, event: str, *args: Any) -> Any:
        try:
            if event == "connect":
                return await self.on_connect(*args[:3])
            if event == "disconnect":
                return await self.on_disconnect(args[0])
            await self.on_event(event, args[0], args[1] if len(args) > 1 else None)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except Exception:
            log.exception("realtime: %s event %r failed", self.label, event)
            if event not in ("connect", "disconnect"):
                await self.emit("error", errors.error_payload(
                    errors.INTERNAL, "The event could not be handled"), to=args[0])
        return None

    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        raise NotImplementedError

    async def on_disconnect(self, sid: str) -> None:
        raise NotImplementedError

    async def on_event(self, event: str, sid: str, data: Any) -> None:
        raise NotImplementedError


class Realtime:
    """The Socket.IO server of one gateway."""

    def __init__(self, gateway: Gateway, cfg: RealtimeConfig) -> None:
        from .engine_socket import EngineNamespace
        from .gui_socket import GuiNamespace

        self.gateway = gateway
        self.cfg = cfg
        self.instance_id = uuid.uuid4().hex
        self.loop: asyncio.AbstractEventLoop | None = None
        if cfg.redis_url:
            manager: socketio.AsyncManager = RedisManager(cfg.redis_url, cfg.channel,
                                                          self.on_control)
        else:
            manager = LocalManager(self.on_control)
        origins: Any = "*" if "*" in cfg.cors_origins else list(cfg.cors_origins)
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=manager,
            cors_allowed_origins=origins,
            # Above twice the relay limit Engine.IO closes the connection; between the two the
            # relay answers with an error event (see EngineNamespace/GuiNamespace).
            max_http_buffer_size=2 * cfg.max_payload,
            # One socket's events are handled in order, one at a time: replies keep their
            # order and a flooding client only slows itself down.
            async_handlers=False,
            logger=False,
            engineio_logger=False,
            json=SafeJSON,
        )
        self.engines: dict[str, EngineConn] = {}  # sid → engine socket
        self.engine_sids: dict[str, set[str]] = {}  # engine id → its sids here
        self.guis: dict[str, GuiConn] = {}  # sid → GUI socket
        connections = gateway.metrics.gauge("flowork_realtime_connections",
                                            "Open Socket.IO connections", ("namespace",))
        connections.labels("/engine-socket").set_function(lambda: len(self.engines))
        connections.labels("/gui-socket").set_function(lambda: len(self.guis))
        self.vitals: dict[str, Any] = {}  # engine id → last vitals heard here
        self._audiences: dict[str, Audience] = {}
        #: engine id → account id → (until, (role, socket online))
        self._access: dict[str, dict[int, tuple[float, Any]]] = {}
        self._renewer: asyncio.Task | None = None
        self.closing = False  # set at shutdown: leases were released already
        self.engine_ns = EngineNamespace(self)
        self.gui_ns = GuiNamespace(self)
        self.sio.register_namespace(self.engine_ns)
        self.sio.register_namespace(self.gui_ns)

    # -- credentials (the enabled schemes', collected after configure: read on first use) ---

    @functools.cached_property
    def user_headers(self) -> tuple[str, ...]:
        """The headers a GUI signs in with: those of the enabled ``user`` schemes."""
        return self.gateway.scheme_headers("user")

    @functools.cached_property
    def engine_token_header(self) -> str:
        """The header an engine's socket token is checked as: the first ``engine`` scheme's."""
        return self.gateway.scheme_headers("engine")[0]

    # -- ASGI ------------------------------------------------------------------------------

    def asgi(self, app: Any) -> Callable[..., Awaitable[None]]:
        """The ASGI app: Socket.IO paths to the server, everything else to ``app``."""
        handle = self.sio.handle_request

        async def realtime_asgi(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                path = scope["path"]
                if path.startswith(PATHS) or path + "/" in PATHS:
                    if self.loop is None:
                        self.bind_loop(asyncio.get_running_loop())
                    await handle(scope, receive, send)
                    return
            await app(scope, receive, send)

        return realtime_asgi

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop serving sockets: REST threads schedule their pushes on it."""
        if self.loop is not None:
            return
        self.loop = loop
        self._renewer = loop.create_task(self._renew_leases())
        if self.cfg.redis_url and not self.sio.manager_initialized:
            # Listen to Redis from the start, not from the first client: pushes and control
            # messages from other instances must reach sockets as soon as they connect.
            self.sio.manager_initialized = True
            self.sio.manager.initialize()

    def release_all(self) -> None:
        """The gateway is stopping: its engines go offline now rather than when their leases
        lapse (blocking; the server closes the sockets themselves)."""
        self.closing = True
        urls: dict[str, str | None] = {}
        for conn in list(self.engines.values()):
            if conn.engine_id is not None:
                urls[conn.engine_id] = urls.get(conn.engine_id) or conn.url
        hook = self.gateway.hook
        with self.gateway.using_db():
            for engine_id, url in urls.items():
                try:
                    hook.flowork_engine_socket_release(engine_id=engine_id, holder=self.instance_id,
                                                       url=url)
                except Exception:  # the database may be gone too: the lease lapses instead
                    log.warning("realtime: could not release engine %s at shutdown", engine_id)
                    break

    # -- threads ↔ loop --------------------------------------------------------------------

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Blocking (database) work off the loop, with the gateway's database active."""
        run_sync = getattr(self.gateway, "run_sync", None)
        if run_sync is not None:  # the kernel's bounded pool (ASGI serving)
            return await run_sync(fn, *args, **kwargs)
        gateway = self.gateway

        def call() -> Any:
            with gateway.using_db():
                try:
                    return fn(*args, **kwargs)
                finally:
                    gateway.release_db()

        return await asyncio.get_running_loop().run_in_executor(None, call)

    def schedule(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``make()`` on the socket loop, from a REST worker thread; never blocks. Without
        a loop (waitress, or no socket served yet) there is no socket to tell."""
        loop = self.loop or getattr(self.gateway, "loop", None)
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(self._guarded(make()))
            return
        # The coroutine is made on the loop, when the callback runs: a loop that stops before
        # running it leaves no never-awaited coroutine behind.
        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(self._guarded(make())))
        except RuntimeError:  # the loop closed since the check: the server is stopping
            pass

    @staticmethod
    async def _guarded(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:
            log.exception("realtime push failed")

    # -- control messages (every instance) -------------------------------------------------

    async def control(self, op: str, **data: Any) -> None:
        await self.sio.manager.emit("control", {"op": op, **data}, namespace=CONTROL_NS)

    async def on_control(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        op = message.get("op")
        engine_id = message.get("engine_id")
        if op == "forget_access" and isinstance(engine_id, str):
            self.forget_access(engine_id)
        elif op == "revoke_engine" and isinstance(engine_id, str):
            self.forget_access(engine_id)
            await self.engine_ns.refuse_engine(engine_id)

    # -- who may use an engine -------------------------------------------------------------

    def forget_access(self, engine_id: str) -> None:
        self._audiences.pop(engine_id, None)
        self._access.pop(engine_id, None)

    async def audience(self, engine_id: str) -> Audience | None:
        """The engine's owner and guests (None if the engine is gone)."""
        now = time.monotonic()
        cached = self._audiences.get(engine_id)
        if cached is not None and cached.expires > now:
            return cached
        audience = await self.run_sync(self._load_audience, engine_id)
        if audience is not None:
            audience.expires = now + AUDIENCE_TTL_S
            if len(self._audiences) >= CACHE_MAX:
                self._audiences.clear()
            self._audiences[engine_id] = audience
        return audience

    def _load_audience(self, engine_id: str) -> Audience | None:
        hook = self.gateway.hook
        status = hook.flowork_engine_status(engine_id=engine_id)
        if status is None:
            return None
        owner = Account.get_or_none(Account.id == status.owner_account_id)
        if owner is None:
            return None
        guests: dict[str, int] = {}
        roles: dict[int, str] = {}
        for items in hook.flowork_engine_guests(engine_id=engine_id):
            for guest in items:
                guests[guest.account.address.lower()] = guest.account.id
                roles[guest.account.id] = guest.role
        return Audience(owner.id, owner.address.lower(), guests, roles)

    async def access(self, account_id: int, engine_id: str) -> tuple[str | None, bool]:
        """(role of ``account_id`` on ``engine_id`` — owner/admin/runner/reader — or None,
        whether a socket holds the engine now), reused for ACCESS_TTL_S."""
        now = time.monotonic()
        by_account = self._access.get(engine_id)
        cached = by_account.get(account_id) if by_account is not None else None
        if cached is not None and cached[0] > now:
            return cached[1]
        result = await self.run_sync(self._load_access, account_id, engine_id)
        if len(self._access) >= CACHE_MAX:
            self._access.clear()
        self._access.setdefault(engine_id, {})[account_id] = (now + ACCESS_TTL_S, result)
        return result

    def _load_access(self, account_id: int, engine_id: str) -> tuple[str | None, bool]:
        hook = self.gateway.hook
        status = hook.flowork_engine_status(engine_id=engine_id)
        if status is None:
            return None, False
        if status.owner_account_id == account_id:
            role = "owner"
        else:
            role = hook.flowork_engine_guest_role(engine_id=engine_id, account_id=account_id)
        return role, bool(status.socket_online)

    def statuses(self, account_id: int) -> list[Any]:
        """Owned and shared engines of ``account_id`` (blocking: call through run_sync)."""
        seen: dict[str, Any] = {}
        for items in self.gateway.hook.flowork_engine_statuses(account_id=account_id):
            for status in items:
                seen.setdefault(status.engine_id, status)
        return sorted(seen.values(), key=lambda s: (s.name.lower(), s.engine_id))

    def status_json(self, status: Any) -> dict[str, Any]:
        last_seen = status.last_seen
        return {
            "engine_id": status.engine_id,
            "name": status.name,
            "status": "online" if status.online else "offline",
            "last_seen": _iso(last_seen),
            "vitals": self.vitals.get(status.engine_id) if status.online else None,
        }

    # -- pushes ----------------------------------------------------------------------------

    async def push_to_audience(self, engine_id: str, event: str, data: Any,
                               audience: Audience | None = None) -> None:
        audience = audience or await self.audience(engine_id)
        if audience is None:
            return
        rooms = [user_room(audience.owner_id), *(user_room(i) for i in audience.guests.values())]
        await self.sio.emit(event, data, to=rooms, namespace=GUI_NS)

    async def push_status(self, engine_id: str) -> None:
        status = await self.run_sync(self.gateway.hook.flowork_engine_status, engine_id=engine_id)
        if status is not None:
            await self.push_to_audience(engine_id, "engine_status_update", self.status_json(status))

    # -- presence leases -------------------------------------------------------------------

    def lease_until(self) -> dt.datetime:
        return utcnow() + dt.timedelta(seconds=self.cfg.lease_s)

    async def _renew_leases(self) -> None:
        period = self.cfg.lease_s / 3
        while True:
            await asyncio.sleep(period)
            if self.closing:
                return
            engine_ids = [eid for eid, sids in self.engine_sids.items() if sids]
            hook = self.gateway.hook
            try:
                if engine_ids:
                    await self.run_sync(functools.partial(
                        hook.flowork_engine_socket_lease, engine_ids=engine_ids,
                        holder=self.instance_id, until=self.lease_until(), take_over=False))
                # Engines another instance held when it died: tell their GUIs they are gone.
                lapsed = await self.run_sync(hook.flowork_engine_lapsed_leases) or []
                for engine_id in lapsed:
                    await self.push_status(engine_id)
            except Exception:  # the database may be down for a moment: try again next period
                log.warning("realtime: could not renew presence leases", exc_info=True)


def _iso(value: Any) -> str | None:
    from gateway_kernel.http import isoformat

    return isoformat(value) if value is not None else None
