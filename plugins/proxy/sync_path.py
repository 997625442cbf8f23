"""The WSGI server's exchange with an engine (``serve --server waitress``): a thread per
exchange, through the pooled, deadline- and address-guarded transport of ``transport.py``.

The engine's body streams back as the WSGI response iterable (:class:`UpstreamBody`); the
client's body streams up in chunks. Errors map to the proxy's (``errors.py``) and feed the
circuit breaker, as on the ASGI path (``async_path.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from gateway_kernel.http import body_stream

from . import errors
from .fairness import Slot
from .headers import BODILESS, apply_response, encode, response_headers
from .transport import EngineTransport, Exchange

if TYPE_CHECKING:
    from .forward import Forwarder, Outgoing

log = logging.getLogger("gateway_plugins.proxy")

CHUNK = 64 * 1024


class SyncPath:
    """Sends :class:`~.forward.Outgoing` requests from a worker thread."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.fwd = forwarder
        self.settings = forwarder.settings
        # One pooled transport per gateway, used directly rather than through httpx.Client:
        # the Client's extras are all wrong for a proxy (a cookie jar shared by every user,
        # redirect following, auth flows, environment proxies) and cost ~10-20% of proxied
        # throughput (bench/bench_proxy.py). The transport never follows redirects and never
        # reads the environment. Built on first use.
        self._transport: EngineTransport | None = None
        settings = self.settings
        self.timeouts = httpx.Timeout(
            connect=settings.connect_timeout_s, read=settings.read_timeout_s,
            write=settings.read_timeout_s, pool=settings.connect_timeout_s,
        ).as_dict()

    @property
    def transport(self) -> EngineTransport:
        if self._transport is None:
            self._transport = EngineTransport(self.settings.max_connections,
                                              keepalive_expiry=4.0, policy=self.fwd.policy)
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def send(self, req: Any, resp: Any, out: Outgoing) -> None:
        """Send ``out`` and set ``resp`` to the engine's answer (streamed: ``resp.stream``)."""
        try:
            self._exchange(req, resp, out)
        except BaseException:
            out.slot.release()
            raise

    def _exchange(self, req: Any, resp: Any, out: Outgoing) -> None:
        fwd = self.fwd
        # Never hold a pooled database connection across the engine's answer time.
        fwd.gateway.release_db()
        origin = out.origin
        raw_headers = [(b"Host", origin.host_header)]
        raw_headers += [(n.encode("latin-1"), encode(v)) for n, v in out.headers]
        exchange = Exchange(self.settings.timeout_s, self.settings.max_duration_s, out.guard,
                            uploading=out.has_body)
        body = _upload(body_stream(req), out.length, exchange) if out.length else None
        upstream = self._send(out.method, origin.address, out.target, raw_headers, body,
                              exchange, out.key, out.retries)

        status = upstream.status_code
        raw = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in upstream.headers.raw]
        kept, content_length = response_headers(raw)
        chunks = upstream.iter_raw()
        prefix: list[bytes] = []
        policy = fwd.cache_policy(out, status, raw, content_length)
        if policy is not None:
            prefix, complete = self._read_prefix(upstream, chunks, exchange, out.key)
            if complete:
                fwd.send_whole(resp, out, status, kept, b"".join(prefix), policy)
                return

        apply_response(resp, status, kept)
        if req.method == "HEAD" or status in BODILESS or status < 200:
            upstream.close()
            out.slot.release()
            if content_length is not None and req.method == "HEAD":
                resp.set_header("Content-Length", content_length)
            resp.stream = ()  # an empty iterable: Falcon would otherwise claim Content-Length 0
            return
        if content_length is not None:
            resp.set_header("Content-Length", content_length)
        resp.stream = UpstreamBody(upstream, chunks, exchange, out.slot, prefix)

    def _send(self, method: str, origin: tuple[bytes, bytes, int | None], target: bytes,
              headers: list[tuple[bytes, bytes]], body: Iterator[bytes] | None,
              exchange: Exchange, key: tuple[str, str], retries: int) -> httpx.Response:
        """Send, retrying transport failures of body-less idempotent requests (nothing has
        reached the client yet); map failures to the API's errors and feed the breaker."""
        attempt = 0
        raw_method = method.upper().encode("ascii")
        extensions = {"timeout": self.timeouts}
        started = time.perf_counter()
        while True:
            try:
                with exchange.active():
                    response = self.transport.send(raw_method, origin, target, headers,
                                                   body if body is not None else b"", extensions)
            except httpx.PoolTimeout:  # our own pool is exhausted: not the engine's fault
                raise errors.pool_exhausted() from None
            except httpx.TimeoutException as exc:
                self.fwd.failed(key, exc, "timeout", started)
                raise errors.engine_timeout() from None
            except httpx.LocalProtocolError:
                raise errors.body_incomplete(
                    "The request body is shorter than its Content-Length") from None
            except httpx.TransportError as exc:
                if attempt < retries:
                    attempt += 1
                    continue
                self.fwd.failed(key, exc, "unreachable", started)
                raise errors.engine_unreachable() from None
            self.fwd.succeeded(key, started)
            exchange.headers_received()
            return response

    def _read_prefix(self, upstream: httpx.Response, chunks: Iterator[bytes], exchange: Exchange,
                     key: tuple[str, str]) -> tuple[list[bytes], bool]:
        """Up to the cache's entry limit of the body: (chunks, True) when that was all of
        it; else (chunks read so far, False), the rest still to stream. Failures count as
        before the answer started."""
        assert self.fwd.cache is not None
        limit = self.fwd.cache.max_entry_bytes
        read: list[bytes] = []
        size = 0
        try:
            with exchange.active():
                for chunk in chunks:
                    read.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        return read, False
        except httpx.TimeoutException as exc:
            upstream.close()
            self.fwd.failed(key, exc)
            raise errors.engine_timeout() from None
        except httpx.TransportError as exc:
            upstream.close()
            self.fwd.failed(key, exc)
            raise errors.engine_unreachable() from None
        upstream.close()
        return read, True


def _upload(stream: Any, length: int, exchange: Exchange) -> Iterator[bytes]:
    """The request body in chunks (never all of it in memory)."""
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        yield chunk
    exchange.body_sent()


class UpstreamBody:
    """The WSGI response iterable: the engine's raw bytes (no decompression) as they arrive.

    ``close()`` (called by the WSGI server when the client goes away, or at the end) closes
    the engine's response, which drops an unfinished upstream connection, and gives back the
    exchange's fairness slot.
    """

    __slots__ = ("_chunks", "_exchange", "_prefix", "_response", "_slot")

    def __init__(self, response: httpx.Response, chunks: Iterator[bytes], exchange: Exchange,
                 slot: Slot, prefix: list[bytes] | None = None) -> None:
        self._response = response
        self._exchange = exchange
        self._slot = slot
        self._prefix = prefix or None
        self._chunks = chunks

    def __iter__(self) -> UpstreamBody:
        return self

    def __next__(self) -> bytes:
        if self._prefix:
            return self._prefix.pop(0)
        token = self._exchange.enter()
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except httpx.HTTPError as exc:
            self.close()
            log.warning("engine response broke off: %s: %s", type(exc).__name__, exc)
            raise errors.UpstreamAborted(
                f"engine response broke off: {type(exc).__name__}") from None
        finally:
            Exchange.leave(token)

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            self._slot.release()
