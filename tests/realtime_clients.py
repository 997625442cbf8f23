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


def kernel_serves_asgi() -> bool:
    """Does ``flowork-gateway serve`` serve ASGI (uvicorn) by default?"""
    from pathlib import Path

    import gateway_kernel.cli

    return "uvicorn" in Path(gateway_kernel.cli.__file__).read_text(encoding="utf-8")


def start_gateway(settings: dict[str, str], log_dir: Any, wait: float = 60.0) -> Any:
    """A real gateway process serving REST and Socket.IO on one port: ``flowork-gateway
    serve`` once the kernel serves ASGI, else tests/realtime_serve.py (uvicorn)."""
    import subprocess
    import sys
    from pathlib import Path

    from procs import GatewayProcess, clean_environment, free_port

    if kernel_serves_asgi():
        return GatewayProcess.start(settings, log_dir, wait=wait)
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"gateway-{port}.log"
    handle = open(log_path, "ab")
    script = Path(__file__).with_name("realtime_serve.py")
    proc = subprocess.Popen([sys.executable, str(script), str(port)],
                            env=clean_environment(settings), stdout=handle,
                            stderr=subprocess.STDOUT, cwd=log_dir)
    gateway = GatewayProcess(port=port, proc=proc, log_path=log_path, _log_handle=handle)
    try:
        gateway.wait_up(wait)
    except BaseException:
        gateway.stop()
        raise
    return gateway
