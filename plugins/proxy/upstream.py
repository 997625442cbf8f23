"""The proxy's async HTTP/1.1 client to engines (the ASGI server's upstream side).

One file behind a small interface, so that swapping the client is one file. The caller
(forward.py) owns the breaker, retries, header hygiene and caching; this owns connections,
timeouts and the address guard.

Chosen by measurement: ``bench/bench_upstream.py`` (this process's CPU, a stub engine in a
second process, 4000 small GETs with 32 in flight, one 64 MiB download and one chunked 64 MiB
upload, median of 3, ratio = CPU / cheapest; 2-core shared machine, ±10-30 % run to run):

    | client                       | small GET µs | ratio | 64 MiB down ms | ratio | up ms | ratio |
    |------------------------------|--------------|-------|----------------|-------|-------|-------|
    | ours (asyncio + httptools)   |           38 |  1.00 |             31 |  1.07 |    17 |  1.05 |
    | pyreqwest                    |           58 |  1.52 |             34 |  1.17 |    73 |  4.42 |
    | aiohttp                      |          126 |  3.29 |             29 |  1.00 |    16 |  1.00 |
    | httpcore.AsyncConnectionPool |         2357 | 61.63 |            118 |  4.11 |    59 |  3.59 |
    | httpx.AsyncClient            |         2675 | 69.93 |             84 |  2.91 |    49 |  2.98 |

The client is a small asyncio ``Protocol`` with llhttp (``httptools``) parsing the answers:
the cheapest per small request by 1.5x (pyreqwest) to 3x (aiohttp), level with aiohttp on
bulk transfers, and it gives per request what the proxy needs and the libraries do not: an
overall deadline a drip-feeding engine cannot stretch, a headers deadline that starts when the
request body is sent, a connection to exactly the address the policy checked (TLS still
verified against the host name), and the body handed over as it arrives with backpressure.
pyreqwest can neither bound the headers phase nor pin one request to a checked address (its
resolver overrides are per client) and costs 4x on streamed uploads; aiohttp is the fallback
if this one ever has to go (custom resolver for the guard, a wrapper for the headers phase);
httpx/httpcore's async pool costs milliseconds per request at 32 in flight.

Rules: HTTP/1.1 only, keep-alive connections pooled per origin (at most ``max_connections``
open in all; an idle one is dropped after ``KEEPALIVE_S``), no redirects, no cookies, no proxy
from the environment, no decompression (bodies pass through byte for byte). One client serves
one event loop and is not thread-safe (everything runs on the loop). A request that fails on a
pooled connection the engine had just closed is not retried here: the caller retries what is
safe to retry (body-less idempotent requests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httptools

from gateway_kernel.netpolicy import AddressPolicy, URLRefused, literal_address

#: An idle pooled connection older than this is closed rather than reused: engines' servers
#: commonly close idle connections after 5 s (uvicorn), and a request sent on a connection the
#: server is closing fails with nothing to show for it.
KEEPALIVE_S = 4.0
#: Unconsumed response bytes above which reading from the engine pauses: two socket reads
#: (asyncio reads up to 256 KiB); at one read, pausing and resuming on nearly every read cost
#: ~40 % more CPU on a 64 MiB download (bench/bench_upstream.py).
READ_HIGH_WATER = 512 * 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUS = frozenset({204, 304})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = frozenset({"content-length", "transfer-encoding"})


@dataclass(frozen=True)
class Timeouts:
    connect_s: float  # TCP/TLS connect
    read_s: float  # longest silence while reading or writing
    headers_s: float  # from the end of the request body to the response headers
    max_duration_s: float  # the whole exchange, transfers included


class UpstreamError(Exception):
    """Base of the client's errors; the message is safe to log (no secrets, no query)."""


class UpstreamConnectError(UpstreamError):
    """Refused, DNS failure, or an address the policy refuses (502 engine_unreachable)."""


class UpstreamTimeout(UpstreamError):
    """A connect, headers, read or overall deadline passed (504 engine_timeout)."""


class UpstreamProtocolError(UpstreamError):
    """A malformed answer, or the connection reset or closed mid-way (502)."""


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str  # lowercase, without brackets
    port: int
    host_header: str  # what the Host header says for this origin


def _parse_origin(authority_url: str) -> _Origin:
    scheme, _, authority = authority_url.partition("://")
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS or not authority or "@" in authority:
        raise UpstreamConnectError("engine URL must be http(s)://host[:port]")
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise UpstreamConnectError("engine URL has a malformed host")
    else:
        host, _, port_text = authority.partition(":")
    try:
        port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    except ValueError:
        raise UpstreamConnectError("engine URL has a malformed port") from None
    if not host or not 0 < port < 65536:
        raise UpstreamConnectError("engine URL has a malformed host or port")
    return _Origin(scheme, host.lower(), port, authority)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; carries one exchange at a time."""

    def __init__(self, pool: UpstreamClient, key: tuple[_Origin, bool]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.idle = False
        self.closed = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reset_exchange("GET")

    def _reset_exchange(self, method: str) -> None:
        self.method = method
        self.parser: Any = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_done = False
        self.interim = False  # inside a 1xx answer, which the real one follows
        self.complete = False
        self.sent = False  # the whole request went out (else the connection cannot be reused)
        self.framed = False  # Content-Length or Transfer-Encoding seen
        self.reusable = False
        self.error: UpstreamError | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.read_paused = False
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self.complete:
            # Bytes nobody asked for (no exchange, or past the end of the answer): the
            # connection's framing can no longer be trusted.
            self.reusable = False
            self._abort()
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(reusable=False)
        except httptools.HttpParserError:
            self._fail(UpstreamProtocolError("the engine sent a malformed HTTP answer"))
            self._abort()
            return
        if self.buffered >= READ_HIGH_WATER and not self.read_paused and not self.complete:
            self.read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and not self.framed and self.error is None:
            # A body delimited by the end of the connection (no length, not chunked).
            self._finish(reusable=False)
        elif not self.complete:
            self._fail(UpstreamProtocolError("the engine closed the connection mid-answer"))
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamProtocolError("the engine closed the connection"))
        self.pool._lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- llhttp callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:  # a second answer to one request: never trust this connection again
            self.reusable = False
            return
        text = name.decode("latin-1")
        if text.lower() in _FRAMING:
            self.framed = True
        self.headers.append((text, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.complete:
            self.reusable = False
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # an interim answer (100 Continue); the real one follows
            self.framed = False
            self.interim = True
            return
        self.status = status
        self.headers_done = True
        if self.method == "HEAD" or status in _NO_BODY_STATUS:
            self.framed = True
            self._finish(reusable=self.parser.should_keep_alive())
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.reusable = False
            return
        self.chunks.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if not self.complete:
            self._finish(reusable=self.parser.should_keep_alive())

    # -- exchange state ----------------------------------------------------------------------

    def _finish(self, reusable: bool) -> None:
        self.complete = True
        self.reusable = reusable and not self.closed
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _abort(self) -> None:
        if self.transport is not None and not self.closed:  # (asyncio fails on a second one)
            self.transport.abort()

    async def wait(self, timeout: float, what: str) -> None:
        """Until the parser has news (headers, body, end, error), or ``timeout`` s of silence."""
        if timeout <= 0:
            raise UpstreamTimeout(f"the engine exceeded the {what} deadline")
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter, what)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    async def write(self, data: bytes, timeout: float) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise UpstreamProtocolError("the engine closed the connection")
        self.transport.write(data)
        if self._write_paused:
            if timeout <= 0:
                raise UpstreamTimeout("the engine exceeded the write deadline")
            waiter = self._drain_waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, _expire, waiter, "write")
            try:
                await waiter
            finally:
                timer.cancel()
                self._drain_waiter = None

    def consumed(self) -> None:
        """The reader took everything buffered: let the engine send more."""
        self.buffered = 0
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()


def _expire(waiter: asyncio.Future[None], what: str) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(f"the engine exceeded the {what} deadline"))


class UpstreamResponse:
    """Status and headers of an engine's answer; iterate it for the body as it arrives."""

    __slots__ = ("_conn", "_deadline", "_read_s", "_released", "headers", "status")

    status: int
    headers: list[tuple[str, str]]  # as received; hop-by-hop headers NOT removed here

    def __init__(self, conn: _Connection, deadline: float, read_s: float) -> None:
        self._conn = conn
        self._deadline = deadline
        self._read_s = read_s
        self._released = False
        self.status = conn.status
        self.headers = conn.headers

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        while True:
            if self._released:
                raise StopAsyncIteration
            if conn.chunks:
                chunks = conn.chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                conn.consumed()
                return data
            if conn.error is not None:
                await self._discard()
                raise conn.error
            if conn.complete:
                self._release()
                raise StopAsyncIteration
            left = self._deadline - time.monotonic()
            try:
                if left < self._read_s:
                    await conn.wait(left, "overall")
                else:
                    await conn.wait(self._read_s, "read")
            except BaseException:
                await self._discard()
                raise

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._conn.pool._release(self._conn, self._conn.reusable)

    async def _discard(self) -> None:
        if not self._released:
            self._released = True
            self._conn.pool._release(self._conn, False)

    async def aclose(self) -> None:
        """Release the connection: back to the pool when the whole answer has arrived, else
        closed (an unread rest of a body cannot be skipped cheaply or safely)."""
        if not self._released:
            conn = self._conn
            self._released = True
            conn.pool._release(conn, conn.complete and conn.reusable and conn.error is None)


class UpstreamClient:
    """Pooled keep-alive HTTP/1.1 connections per origin, at most ``max_connections`` in all."""

    def __init__(self, *, max_connections: int, address_policy: AddressPolicy | None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: for https engines; default: the system's CAs, host names verified
        (tests pass one trusting their own CA)."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.address_policy = address_policy
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[tuple[_Origin, bool], list[_Connection]] = {}
        self._open = 0  # connections open or being opened, idle ones included
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl = ssl_context
        self._closed = False

    # -- public ------------------------------------------------------------------------------

    async def request(self, method: str, url: str, headers: list[tuple[str, str]],
                      body: bytes | AsyncIterable[bytes] | None, *, timeouts: Timeouts,
                      guard: bool) -> UpstreamResponse:
        """Send one request and return once the response headers are in.

        ``guard``: resolve the host, refuse (UpstreamConnectError) if the policy refuses any
        address, then connect to the address that was checked. Never follows redirects, keeps
        no cookies, ignores environment proxies. A streamed ``body`` is sent as it arrives
        (chunked unless ``headers`` has Content-Length). ``headers`` are sent as given; Host
        is added from the URL when absent."""
        start = time.monotonic()
        deadline = start + timeouts.max_duration_s
        origin, target = self._split(url)
        head, length = _request_head(method, target, origin, headers, body)
        conn = await self._acquire(origin, guard, min(start + timeouts.connect_s, deadline))
        conn._reset_exchange(method)
        conn.parser = httptools.HttpResponseParser(conn)
        try:
            await self._send(conn, head, body, length, timeouts, deadline)
            headers_end = min(time.monotonic() + timeouts.headers_s, deadline)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                what = "headers" if headers_end < deadline else "overall"
                await conn.wait(headers_end - time.monotonic(), what)
        except BaseException:
            self._release(conn, False)
            raise
        return UpstreamResponse(conn, deadline, timeouts.read_s)

    async def aclose(self) -> None:
        """Close every pooled connection; connections in use close when released."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn._abort()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamConnectError("the upstream client is closed"))

    # -- request pieces ----------------------------------------------------------------------

    def _split(self, url: str) -> tuple[_Origin, str]:
        scheme_end = url.find("://")
        slash = url.find("/", scheme_end + 3) if scheme_end > 0 else -1
        question = url.find("?", scheme_end + 3) if scheme_end > 0 else -1
        end = min((i for i in (slash, question) if i >= 0), default=len(url))
        authority_url = url[:end]
        target = url[end:] or "/"
        if target.startswith("?"):
            target = "/" + target
        origin = self._origins.get(authority_url)
        if origin is None:
            origin = _parse_origin(authority_url)
            if len(self._origins) >= 4096:
                self._origins.clear()
            self._origins[authority_url] = origin
        return origin, target

    async def _send(self, conn: _Connection, head: bytes,
                    body: bytes | AsyncIterable[bytes] | None, length: int | None,
                    timeouts: Timeouts, deadline: float) -> None:
        read_s = timeouts.read_s
        if body is None or isinstance(body, bytes | bytearray | memoryview):
            await conn.write(head + bytes(body) if body else head,
                             min(read_s, deadline - time.monotonic()))
            conn.sent = True
            return
        await conn.write(head, min(read_s, deadline - time.monotonic()))
        sent = 0
        try:
            # One timer for the whole upload (not one per chunk): the overall deadline.
            async with asyncio.timeout_at(deadline):
                async for chunk in body:
                    if not chunk:
                        continue
                    sent += len(chunk)
                    if length is None:
                        chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
                    elif sent > length:
                        raise UpstreamProtocolError(
                            "the request body is longer than its Content-Length")
                    if conn.headers_done:
                        # The engine answered before the end of the body (say, 413): stop
                        # sending, hand its answer over; the connection is not reused.
                        return
                    try:
                        await conn.write(chunk, min(read_s, deadline - time.monotonic()))
                    except UpstreamProtocolError:
                        if conn.headers_done:
                            return
                        raise
                    if conn.error is not None:  # the engine gave up on us mid-upload
                        raise conn.error
        except TimeoutError:
            raise UpstreamTimeout("the request body exceeded the overall deadline") from None
        if length is None:
            await conn.write(b"0\r\n\r\n", min(read_s, deadline - time.monotonic()))
        elif sent != length:
            raise UpstreamProtocolError("the request body is shorter than its Content-Length")
        conn.sent = True

    # -- the pool ----------------------------------------------------------------------------

    async def _acquire(self, origin: _Origin, guard: bool, connect_end: float) -> _Connection:
        key = (origin, guard)
        while True:
            if self._closed:
                raise UpstreamConnectError("the upstream client is closed")
            idle = self._idle.get(key)
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                conn.idle = False
                transport = conn.transport
                if (not conn.closed and transport is not None and not transport.is_closing()
                        and now - conn.idle_since < KEEPALIVE_S):
                    return conn
                self._close(conn)
            if self._open < self.max_connections or self._evict_idle():
                self._open += 1
                try:
                    return await self._connect(key, connect_end)
                except BaseException:
                    self._open -= 1
                    self._wake_waiter()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            timer = asyncio.get_running_loop().call_later(
                max(0.0, connect_end - time.monotonic()), _expire, waiter, "connection pool")
            try:
                await waiter
            except BaseException:
                # Woken but leaving anyway (cancelled): pass the wake-up on.
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._wake_waiter()
                raise
            finally:
                timer.cancel()
                if not waiter.done():
                    waiter.cancel()

    def _evict_idle(self) -> bool:
        """Close the longest-idle connection of any origin, making room for a new one."""
        oldest: _Connection | None = None
        for conns in self._idle.values():
            if conns and (oldest is None or conns[0].idle_since < oldest.idle_since):
                oldest = conns[0]
        if oldest is None:
            return False
        self._idle[oldest.key].remove(oldest)
        oldest.idle = False
        self._close(oldest)
        return True

    def _close(self, conn: _Connection) -> None:
        """Close ``conn`` and stop counting it (once)."""
        if conn.pool is self:
            conn.pool = _DETACHED
            self._open -= 1
            conn._abort()

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if conn.pool is not self:
            return
        conn.parser = None
        if reusable and conn.sent and not self._closed and not conn.closed:
            conn.idle = True
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.key, []).append(conn)
        else:
            self._close(conn)
        self._wake_waiter()

    def _lost(self, conn: _Connection) -> None:
        """The engine closed ``conn``: forget it if it sits idle."""
        if conn.idle and conn.pool is self:
            conn.idle = False
            idle = self._idle.get(conn.key)
            if idle is not None and conn in idle:
                idle.remove(conn)
            self._close(conn)
            self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- connecting --------------------------------------------------------------------------

    async def _connect(self, key: tuple[_Origin, bool], connect_end: float) -> _Connection:
        origin, guard = key
        loop = asyncio.get_running_loop()
        hosts = [origin.host]
        if guard:
            hosts = await self._checked_addresses(origin, connect_end)
        tls = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        error: Exception | None = None
        for host in hosts:
            left = connect_end - time.monotonic()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    _, conn = await loop.create_connection(
                        lambda: _Connection(self, key), host, origin.port, ssl=tls,
                        server_hostname=origin.host if tls else None)
            except TimeoutError:
                raise UpstreamTimeout(
                    f"connecting to {origin.host}:{origin.port} timed out") from None
            except (OSError, ssl.SSLError) as exc:  # refused, unreachable, TLS: try the next
                error = exc
                continue
            return conn
        if error is None:
            raise UpstreamTimeout(f"connecting to {origin.host}:{origin.port} timed out")
        raise UpstreamConnectError(
            f"cannot connect to {origin.host}:{origin.port}: {type(error).__name__}") from None

    async def _checked_addresses(self, origin: _Origin, connect_end: float) -> list[str]:
        """Every address of ``origin.host``, each allowed by the policy (else refused)."""
        policy = self.address_policy or _DEFAULT_POLICY
        try:
            literal = literal_address(origin.host)
        except URLRefused as exc:
            raise UpstreamConnectError(f"{origin.host}: {exc}") from None
        if literal is not None:
            addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(max(0.0, connect_end - time.monotonic())):
                    infos = await loop.getaddrinfo(origin.host, origin.port,
                                                   type=socket.SOCK_STREAM)
            except TimeoutError:
                raise UpstreamTimeout(f"resolving {origin.host} timed out") from None
            except OSError:
                raise UpstreamConnectError(f"cannot resolve {origin.host}") from None
            addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]))
                                           for info in infos))
        if not addresses:
            raise UpstreamConnectError(f"cannot resolve {origin.host}")
        for address in addresses:
            reason = policy.refusal(address, origin.port)
            if reason:
                raise UpstreamConnectError(
                    f"{origin.host} resolves to an address engines may not use: {reason}")
        return [str(a) for a in addresses]


class _Detached:
    """The pool of a connection that has been closed and no longer counts anywhere."""

    def _release(self, conn: _Connection, reusable: bool) -> None:
        conn._abort()

    def _lost(self, conn: _Connection) -> None:
        pass


_DETACHED: Any = _Detached()
_DEFAULT_POLICY = AddressPolicy()


def _request_head(method: str, target: str, origin: _Origin, headers: list[tuple[str, str]],
                  body: bytes | AsyncIterable[bytes] | None) -> tuple[bytes, int | None]:
    """The request line and headers, and the body length to enforce (None: chunked or none).

    Framing headers are ours: for a bytes body (or none) the given Content-Length and
    Transfer-Encoding are replaced by the true length; for a stream, a given Content-Length is
    kept (and enforced), else the body goes chunked."""
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = False
    length: int | None = None
    streamed = body is not None and not isinstance(body, bytes | bytearray | memoryview)
    for name, value in headers:
        lower = name.lower()
        if lower in _FRAMING:
            if streamed and lower == "content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise UpstreamProtocolError("invalid Content-Length") from None
                if length < 0:
                    raise UpstreamProtocolError("invalid Content-Length")
                lines.append(f"Content-Length: {length}")
            continue
        if lower == "host":
            has_host = True
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.insert(1, f"Host: {origin.host_header}")
    if streamed:
        if length is None:
            lines.append("Transfer-Encoding: chunked")
    elif body:
        lines.append(f"Content-Length: {len(body)}")  # type: ignore[arg-type]
    elif method in _BODY_METHODS:
        lines.append("Content-Length: 0")
    text = "\r\n".join(lines)
    # No header may smuggle a line break or NUL into the request (one scan, in C).
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1 or "\0" in text:
        raise UpstreamProtocolError("a request header contains a line break or NUL")
    try:
        return (text + "\r\n\r\n").encode("latin-1"), length
    except UnicodeEncodeError:
        raise UpstreamProtocolError("a request header is not latin-1") from None
