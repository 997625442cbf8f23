"""Socket.IO clients playing a Core engine and the GUI, for the realtime tests and benchmark.

    engine = await EnginePeer.connect(base, token, engine_id)       # connect-auth style
    gui = await GuiPeer.connect(base, signer)                        # auth.headers style
    await gui.emit("request_presets_list", {"target_engine_id": engine_id})
    cmd = await engine.next("request_presets_list")

Every wait is bounded (``timeout``); ``never`` asserts an event did not arrive in a window.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import socketio

from gateway_plugins.auth_crypto.signing import Signer, socket_message

ENGINE_NS = "/engine-socket"
GUI_NS = "/gui-socket"


class Peer:
    """One Socket.IO client in one namespace that records every event it hears."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.connect_error: Any = None
        self.disconnected = asyncio.Event()
        self._arrived = asyncio.Event()
        self.client.on("*", self._record, namespace=namespace)
        self.client.on("connect_error", self._connect_error, namespace=namespace)
        self.client.on("disconnect", self._disconnect, namespace=namespace)

    async def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if len(args) == 1 else (args or None)))
        self._arrived.set()

    async def _connect_error(self, data: Any = None) -> None:
        self.connect_error = data
        self._arrived.set()

    async def _disconnect(self, *args: Any) -> None:
        self.disconnected.set()
        self._arrived.set()

    async def open(self, base: str, path: str = "/socket.io/", auth: Any = None,
                   headers: dict[str, str] | None = None, transports: tuple[str, ...] = ("websocket",),
                   wait: float = 10.0) -> None:
        await self.client.connect(base, socketio_path=path, namespaces=[self.namespace],
                                  transports=list(transports), auth=auth, headers=headers or {},
                                  wait_timeout=wait)

    async def try_open(self, base: str, **kwargs: Any) -> Any:
        """Connect expecting a refusal; returns the connect error data."""
        try:
            await self.open(base, **kwargs)
        except socketio.exceptions.ConnectionError:
            pass
        else:
            raise AssertionError("connection was accepted")
        return self.connect_error

    async def emit(self, event: str, data: Any = None) -> None:
        await self.client.emit(event, data, namespace=self.namespace)

    async def next(self, event: str, timeout: float = 5.0, *, pop: bool = True) -> Any:
        """The first recorded ``event`` (waiting up to ``timeout``), removed from the log."""
        deadline = time.monotonic() + timeout
        while True:
            for index, (name, data) in enumerate(self.events):
                if name == event:
                    if pop:
                        del self.events[index]
                    return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} within {timeout} s; heard {self.names()}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass

    async def never(self, event: str, within: float = 0.5) -> None:
        await asyncio.sleep(within)
        assert event not in self.names(), f"unexpected {event!r}: {self.events}"

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    async def wait_disconnected(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.disconnected.wait(), timeout)

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()


class EnginePeer(Peer):
    def __init__(self) -> None:
        super().__init__(ENGINE_NS)

    @classmethod
    async def connect(cls, base: str, token: str, engine_id: str | None = None,
                      path: str = "/socket.io/", event_auth: bool = False) -> EnginePeer:
        """Signed in, either with connect ``auth`` or (``event_auth``) with an auth event."""
        peer = cls()
        credentials: dict[str, Any] = {"token": token}
        if engine_id is not None:
            credentials["engine_id"] = engine_id
        if event_auth:
            await peer.open(base, path=path)
            await peer.emit("auth", credentials)
        else:
            await peer.open(base, path=path, auth=credentials)
        await peer.next("auth_success")
        return peer


class GuiPeer(Peer):
    def __init__(self) -> None:
        super().__init__(GUI_NS)

    @classmethod
    async def connect(cls, base: str, signer: Signer, path: str = "/api/socket.io/",
                      initial: bool = True) -> GuiPeer:
        """Signed in with the socket message in ``auth.headers`` (what the lite GUI sends)."""
        peer = cls()
        await peer.open(base, path=path, auth={"headers": socket_headers(signer)})
        if initial:
            await peer.next("initial_engine_statuses", pop=False)
        return peer


def socket_headers(signer: Signer, timestamp: int | None = None) -> dict[str, str]:
    return signer.headers(message=socket_message(signer.address, timestamp))


# -- a gateway that serves Socket.IO ---------------------------------------------------------


def start_gateway(settings: dict[str, str], log_dir: Any, wait: float = 60.0) -> Any:
    """A real ``flowork-gateway serve`` process on uvicorn (Socket.IO needs a server that
    upgrades connections, whatever FLOWORK_TEST_SERVER says for the rest of the suite)."""
    from tests.support.procs import GatewayProcess

    return GatewayProcess.start(settings, log_dir, wait=wait, server="uvicorn")


def run(coro: Any) -> None:
    """Run one test scenario, bounded in time."""
    asyncio.run(asyncio.wait_for(coro, 60))


def new_engine(gw: Any, owner: Signer, name: str = "engine") -> dict:
    """A new engine of ``owner`` on gateway process ``gw`` (its token in ``raw_token``)."""
    r = httpx.post(gw.url("/user/engines"), json={"name": name}, headers=owner.headers())
    assert r.status_code == 201, r.text
    return r.json()
