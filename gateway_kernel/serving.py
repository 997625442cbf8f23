"""``flowork-gateway serve`` on uvicorn (the default server): one port for REST, the proxy and
WebSocket, with a connection policy in which slow peers cost memory, not capacity.

uvicorn is used with its httptools parser (and uvloop where installed, Linux/macOS), plus what
it lacks (docs/SERVING.md has the measurements and the reasoning):

- a **header read timeout**: a connection whose request head is not complete
  ``FLOWORK_SERVER_HEADER_TIMEOUT_S`` after it opened (or after the first byte of a later
  request) is answered 408 and closed; one that sent nothing is just closed;
- a **head size bound** (``MAX_HEAD_BYTES``): a larger request head is answered 431;
- a **connection bound that never locks out new clients**: above
  ``FLOWORK_SERVER_MAX_CONNECTIONS`` the oldest connections that are idle or still sending
  their head are closed to make room; connections with a request in progress are kept;
- server-produced errors (malformed request, oversized head, head timeout) answer the JSON
  envelope ``{"error", "code"}``;
- **graceful stop**: SIGTERM, SIGINT (and SIGBREAK on Windows) stop accepting, let in-flight
  requests finish for up to ``FLOWORK_SERVER_STOP_TIMEOUT_S``, run the gateway_shutdown hooks
  (ASGI lifespan), and the process exits 0.

The idle keep-alive timeout is uvicorn's own (``FLOWORK_SERVER_IDLE_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import netpolicy

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("gateway_kernel.serving")

#: Largest request head (request line and headers) accepted; waitress's default is 256 KiB,
#: browsers and the GUI send a few KiB.
MAX_HEAD_BYTES = 64 * 1024

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}


@dataclass(frozen=True)
class ServerPolicy:
    """The connection policy; defaults are the settings' defaults."""

    header_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    stop_timeout_s: float = 30.0
    max_connections: int = 2000
    max_head_bytes: int = MAX_HEAD_BYTES

    @classmethod
    def of(cls, gateway: Gateway) -> ServerPolicy:
        config = gateway.config
        return cls(
            header_timeout_s=config["FLOWORK_SERVER_HEADER_TIMEOUT_S"],
            idle_timeout_s=config["FLOWORK_SERVER_IDLE_TIMEOUT_S"],
            stop_timeout_s=config["FLOWORK_SERVER_STOP_TIMEOUT_S"],
            max_connections=config["FLOWORK_SERVER_MAX_CONNECTIONS"],
        )


def error_response(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer carrying the JSON envelope, closing the connection."""
    body = json.dumps({"error": message, "code": code}).encode()
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ])


class ConnectionRegistry:
    """The server's HTTP connections, oldest first (dicts keep insertion order)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.connections: dict[Any, None] = {}
        self.evicted = 0

    def add(self, protocol: Any) -> None:
        if len(self.connections) >= self.limit:
            self._make_room(len(self.connections) - self.limit + 1)
        # Added after making room: a new connection is never its own victim. When every
        # other connection has a request in progress it is admitted above the bound
        # (memory, not a lock-out).
        self.connections[protocol] = None

    def discard(self, protocol: Any) -> None:
        self.connections.pop(protocol, None)

    def _make_room(self, excess: int) -> None:
        victims = []
        for protocol in self.connections:  # oldest first
            if protocol.evictable():
                victims.append(protocol)
                if len(victims) >= excess:
                    break
        for protocol in victims:
            self.discard(protocol)
            self.evicted += 1
            protocol.evict()


#: Writes up to this size are held until the end of the current loop callback and sent with
#: whatever else the connection writes in it (see :class:`CoalescingTransport`).
COALESCE_BYTES = 16 * 1024


class CoalescingTransport:
    """A connection's transport whose small writes within one loop callback leave in one
    ``send``: uvicorn writes a response's head and its body separately (two system calls
    and two segments per small response); held here, they go out together at the end of
    the callback (``call_soon``), in order. Larger writes flush what is held and go straight
    through; ``close``/``write_eof`` flush first. Everything else is the wrapped transport's."""

    __slots__ = ("_held", "_held_bytes", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes) -> None:
        size = len(data)
        if self._held:
            if self._held_bytes + size <= COALESCE_BYTES:
                self._held.append(data)
                self._held_bytes += size
                return
            self.flush()
        elif size <= COALESCE_BYTES:
            self._held.append(data)
            self._held_bytes = size
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if not held:
            return
        self._held = []
        self._held_bytes = 0
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_bytes

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def unwrap(self) -> asyncio.Transport:
        """Flush and return the wrapped transport (a WebSocket upgrade takes it over)."""
        self.flush()
        return self._transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def protocol_class(policy: ServerPolicy, registry: ConnectionRegistry) -> type:
    """uvicorn's httptools protocol with the head timeout, head bound and connection bound."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GatewayHttpProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _awaiting_head = False
        _head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
            self._await_head()
            registry.add(self)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            registry.discard(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._awaiting_head and (self.cycle is None or self.cycle.response_complete):
                self._await_head()  # the first bytes of the next request on this connection
            if self._awaiting_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if (self._awaiting_head and self._head_bytes > policy.max_head_bytes
                    and not self.transport.is_closing()):
                self._refuse(431, "headers_too_large",
                             f"Request head exceeds {policy.max_head_bytes} bytes")

        def on_headers_complete(self) -> None:
            self._stop_head_timer()
            self._awaiting_head = False
            super().on_headers_complete()

        def handle_websocket_upgrade(self) -> None:
            self._stop_head_timer()
            self._awaiting_head = False
            registry.discard(self)
            if isinstance(self.transport, CoalescingTransport):
                self.transport = self.transport.unwrap()
            super().handle_websocket_upgrade()

        def send_400_response(self, msg: str) -> None:
            self._refuse(400, "invalid_request", "Malformed HTTP request")

        # -- policy --------------------------------------------------------------------------

        def _await_head(self) -> None:
            self._awaiting_head = True
            self._head_bytes = 0
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(policy.header_timeout_s, self._head_timeout)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if not self._awaiting_head or self.transport.is_closing():
                return
            if self._head_bytes:
                self._refuse(408, "request_timeout", "The request head did not arrive in time")
            else:
                self.transport.close()

        def _refuse(self, status: int, code: str, message: str) -> None:
            self._stop_head_timer()
            self._awaiting_head = False
            if not self.transport.is_closing():
                self.transport.write(error_response(status, code, message))
                self.transport.close()

        def evictable(self) -> bool:
            """Idle between requests, or still sending a request head."""
            return self._awaiting_head or self.cycle is None or self.cycle.response_complete

        def evict(self) -> None:
            self._stop_head_timer()
            if not self.transport.is_closing():
                self.transport.close()

    return GatewayHttpProtocol


def _server_class() -> type:
    import uvicorn

    class GatewayServer(uvicorn.Server):
        """uvicorn.Server that exits normally after a signal-initiated graceful stop
        (uvicorn re-raises the signal once shut down, which ends the process with -SIGTERM)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = [signal.SIGINT, signal.SIGTERM]
            if hasattr(signal, "SIGBREAK"):  # Windows: Ctrl-Break, service stop
                signals.append(signal.SIGBREAK)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GatewayServer


def uvicorn_config(app: Any, host: str, port: int, policy: ServerPolicy) -> Any:
    """uvicorn's configuration for serving ``app`` (also bench/ceiling.py's ASGI baseline)."""
    import uvicorn

    registry = ConnectionRegistry(policy.max_connections)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(policy, registry),
        ws="auto",
        loop="auto",  # uvloop where installed (not on Windows), else asyncio
        lifespan="on",
        # Client addresses are the peer's; the proxy plugin decides whom to trust with
        # X-Forwarded-* (FLOWORK_TRUSTED_PROXIES).
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        timeout_keep_alive=policy.idle_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=policy.stop_timeout_s,  # type: ignore[arg-type]
        backlog=BACKLOG,
    )
    config.flowork_registry = registry  # type: ignore[attr-defined]
    return config


BACKLOG = 2048


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts (so that a port in use is one
    clear line from the CLI rather than a server log)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def run_uvicorn(app: Any, sock: socket.socket, policy: ServerPolicy) -> bool:
    """Serve ``app`` on ``sock`` until a stop signal; True if it started (and stopped)."""
    host, port = sock.getsockname()[:2]
    server = _server_class()(uvicorn_config(app, host, port, policy))
    server.run(sockets=[sock])
    return bool(server.started)


def serve_asgi(gateway: Gateway, sock: socket.socket) -> int:
    """Serve ``gateway`` on uvicorn until a stop signal; 0 after a graceful stop."""
    gateway.server = "uvicorn"
    host, port = sock.getsockname()[:2]
    # No engine URL may point back at this server (a proxy loop): see netpolicy.
    netpolicy.for_gateway(gateway).add_own_address(host, port)
    log.info("serving on http://%s:%s (uvicorn, worker threads=%s)", host, port,
             gateway.worker_threads)
    return 0 if run_uvicorn(gateway.asgi, sock, ServerPolicy.of(gateway)) else 1
