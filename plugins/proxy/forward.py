"""Forward one request to an engine and stream its answer back (API.md, "Proxy").

One :class:`Forwarder` per gateway owns the upstream clients (a pooled httpx transport for the
WSGI server, the async client of ``upstream.py`` for the ASGI server), the circuit breaker, the
fairness bounds and the public cache. Everything but the I/O (target, header hygiene, limits,
breaker, cache policy) is decided once for both servers. Bodies stream both ways in chunks;
nothing holds a whole body in memory except the (bounded) public cache.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import falcon
import httpx

from gateway_kernel import netpolicy
from gateway_kernel.errors import GatewayError, bad_request, not_found, unavailable
from gateway_kernel.http import body_stream, body_too_large

from .breaker import CircuitBreaker
from .cache import CachedResponse, CacheKey, ResponseCache, freshness
from .fairness import ConcurrencyLimits, Slot
from .hookspecs import EngineTarget
from .transport import EngineTransport, Exchange
from .upstream import (
    Timeouts,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from gateway_kernel import Gateway, Principal

log = logging.getLogger("gateway_plugins.proxy")

CHUNK = 64 * 1024
VIA = "1.1 flowork-gateway"
RETRYABLE = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})

# RFC 9110 §7.6.1 plus the pre-standard ones still seen in the wild.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})
# Never forwarded: the gateway's own business (identity it asserts; the credentials of its
# auth schemes are dropped by Forwarder.credential_headers / foreign_credential_headers).
_REQUEST_DROP = HOP_BY_HOP | {
    "host", "cookie", "x-flowork-user-id", "x-flowork-engine-id",
    "x-request-id", "content-length", "expect",
}
_CLIENT_ADDRESS = frozenset({"forwarded", "x-real-ip"})  # and every x-forwarded-*
# Never passed back: the gateway sets its own CORS and request id, and engines may not plant
# cookies on the gateway's origin (cookies are never forwarded to them either).
_RESPONSE_DROP = HOP_BY_HOP | {"set-cookie", "x-request-id", "content-length", "content-type"}
_BODILESS = frozenset({204, 304})

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")  # what h11 accepts: no control characters
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"
_QUERY_SAFE = _SEGMENT_SAFE + "/?%"
_SECRET_SPLIT = re.compile(r"[\s,;=:]+")


class UpstreamAborted(Exception):
    """The engine's body broke off after the response started; the server drops the
    connection so the client sees a truncated answer, not a complete-looking one."""


def engine_path(path: str) -> str:
    """``path`` (decoded, below /api/v1) re-encoded segment by segment.

    Dot segments are refused (also once backslashes are read as slashes), so nothing can
    climb out of /api/v1 on the engine; an encoded slash arrives decoded and stays a
    separator, and every ``%`` is re-encoded, so nothing is decoded twice.
    """
    segments = path.split("/")
    for segment in segments:
        if "\x00" in segment or any(p in (".", "..") for p in segment.replace("\\", "/").split("/")):
            raise not_found("No such path")
    return "/".join(quote(s, safe=_SEGMENT_SAFE) for s in segments)


@functools.lru_cache(maxsize=4096)
def engine_base(url: str) -> str | None:
    """``scheme://host[:port][/prefix]`` of an engine URL, or None if it is not usable."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    del port
    return f"{parts.scheme}://{parts.netloc}{quote(parts.path.rstrip('/'), safe='/%')}"


@dataclass(frozen=True)
class _Origin:
    """An engine base parsed once (as httpx would parse it), for building requests without
    ``httpx.Request``."""

    address: tuple[bytes, bytes, int | None]  # scheme, host, port
    host_header: bytes
    prefix: str  # the base's path, already encoded


@functools.lru_cache(maxsize=4096)
def _origin(base: str) -> _Origin:
    url = httpx.URL(base)
    return _Origin((url.raw_scheme, url.raw_host, url.port), url.netloc,
                   url.raw_path.decode("ascii").rstrip("/"))


def _target(origin: _Origin, base: str, rest: str) -> bytes:
    """The request target for ``base + rest``, as httpx would send it. httpx escapes a ``%``
    that starts no ``%XX``; only text with a ``%`` can need that, so only it is parsed."""
    if "%" in rest or "%" in origin.prefix:
        return httpx.URL(base + rest).raw_path
    return (origin.prefix + rest).encode("ascii")


_EMPTY_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # httpx sends Content-Length: 0


@dataclass(frozen=True)
class ProxySettings:
    connect_timeout_s: float
    read_timeout_s: float
    timeout_s: float
    max_duration_s: float
    max_upload_bytes: int
    max_connections: int
    breaker_failures: int
    breaker_cooldown_s: float
    cache_bytes: int
    cache_entry_bytes: int
    trusted_proxies: tuple[Any, ...]
    public_engine_url: str | None
    max_per_engine: int = 32
    max_per_user: int = 64


@dataclass
class Outgoing:
    """One request ready to go to an engine: everything decided before any network I/O, the
    same for the WSGI (threaded) and ASGI (event loop) paths."""

    method: str
    url: str  # base + rest, for the async client
    origin: _Origin  # for the sync transport
    target: bytes  # the raw request target (path and query)
    #: Headers to send (lowercase names, hygiene and the request hook applied), Host excluded.
    headers: list[tuple[str, str]]
    length: int  # the client's declared Content-Length (0: none)
    chunked: bool  # a body without Content-Length (ASGI only: waitress hands over a length)
    key: tuple[str, str]  # the breaker's key: (engine id, base URL)
    guard: bool
    retries: int
    slot: Slot
    cache_key: CacheKey | None = None

    @property
    def has_body(self) -> bool:
        return self.length > 0 or self.chunked


class Forwarder:
    """Header hygiene, deadline, retries, circuit breaker, fairness and streaming for one
    gateway. :meth:`prepare_user`/:meth:`prepare_public` decide (no network I/O, shared by both
    servers); :meth:`send_sync` (waitress, a thread per exchange) and :meth:`send_async`
    (the ASGI server, no thread held while the engine is waited on) do the I/O."""

    def __init__(self, gateway: Gateway, settings: ProxySettings) -> None:
        self.gateway = gateway
        self.settings = settings
        # One pooled transport per gateway, used directly rather than through httpx.Client:
        # the Client's extras are all wrong for a proxy (a cookie jar shared by every user,
        # redirect following, auth flows, environment proxies) and cost ~10-20% of proxied
        # throughput (bench/bench_proxy.py). The transport never follows redirects and never
        # reads the environment. Used by the WSGI path only; built on first use.
        self._transport: EngineTransport | None = None
        self._client: UpstreamClient | None = None  # the ASGI path's client
        self.timeouts = httpx.Timeout(
            connect=settings.connect_timeout_s, read=settings.read_timeout_s,
            write=settings.read_timeout_s, pool=settings.connect_timeout_s,
        ).as_dict()
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self.limits = ConcurrencyLimits(settings.max_per_engine, settings.max_per_user)
        self.cache = (ResponseCache(settings.cache_bytes, settings.cache_entry_bytes)
                      if settings.cache_bytes > 0 else None)
        #: The gateway's one address policy (engines set its allow-list, ``serve`` registers
        #: the listening sockets): every address an engine URL resolves to is checked at connect.
        self.policy = netpolicy.for_gateway(gateway)
        metrics = gateway.metrics
        #: Engine exchanges by outcome (ok, timeout, unreachable), time to response headers.
        self.upstream_latency = metrics.histogram(
            "flowork_proxy_upstream_seconds", "Time from sending to an engine to its response "
            "headers, by outcome", ("outcome",))
        metrics.gauge("flowork_proxy_breakers_open",
                      "Engines short-circuited by the circuit breaker now").set_function(
            self.breaker.open_count)

    @property
    def transport(self) -> EngineTransport:
        if self._transport is None:
            self._transport = EngineTransport(self.settings.max_connections,
                                              keepalive_expiry=4.0, policy=self.policy)
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @functools.cached_property
    def credential_headers(self) -> frozenset[str]:
        """Headers of every auth scheme: a public proxy forwards no credentials at all.
        (Schemes are collected after ``gateway_configure``, hence lazily.)"""
        return frozenset(
            h.lower() for schemes in self.gateway.schemes.values() for s in schemes
            for h in s.headers
        ) | {"authorization"}

    @functools.cached_property
    def foreign_credential_headers(self) -> frozenset[str]:
        """Headers of the schemes of other kinds than ``user``: a user's request to an engine
        carries the user's own credential (the engine checks it), never an engine's or a
        service's."""
        return frozenset(
            h.lower() for kind, schemes in self.gateway.schemes.items() if kind != "user"
            for s in schemes for h in s.headers
        )

    # -- deciding (no network I/O; runs in a worker thread under ASGI) --------------------

    def prepare_user(self, req: Any, path: str, principal: Principal,
                     target: EngineTarget) -> Outgoing:
        url = target.url or ""
        base = engine_base(url)
        origin = _safe_origin(base) if base is not None else None
        if base is None or origin is None:
            # A stored URL the proxy cannot use is the engine's failure like any other:
            # 502, and it counts towards the breaker (so it is not retried forever).
            key = (target.engine_id, url)
            self._refuse_if_open(key)
            log.warning("engine %s has an unusable URL; not proxying", target.engine_id)
            self.breaker.failure(key)
            raise GatewayError(502, "engine_unreachable", "The engine could not be reached")
        user = principal.account_id if principal is not None else None
        return self._prepare(req, path, base, origin, target, principal,
                             key=(target.engine_id, base), guard=not target.static,
                             public=False, user=user)

    def cached(self, req: Any, path: str) -> CachedResponse | None:
        """The public cache's answer to this request, if it has one (no I/O, no plugin code:
        safe on the event loop)."""
        key = self._cache_key(req, engine_path(path))
        if key is None:
            return None
        _refuse_loop(req)
        return self.cache.get(key) if self.cache is not None else None

    def _cache_key(self, req: Any, encoded: str) -> CacheKey | None:
        if self.cache is None or req.method not in ("GET", "HEAD"):
            return None
        return (encoded, _query_string(req),
                (req.get_header("Accept-Encoding") or "").replace(" ", "").lower())

    def prepare_public(self, req: Any, path: str) -> Outgoing | CachedResponse:
        """The request for the public engine, or the cached answer to send instead."""
        url = self.settings.public_engine_url
        if url is None:
            raise unavailable("no_public_engine", "No public engine is configured")
        encoded = engine_path(path)
        _refuse_loop(req)
        cache_key = self._cache_key(req, encoded)
        if cache_key is not None:
            assert self.cache is not None
            hit = self.cache.get(cache_key)
            if hit is not None:
                return hit
        base = engine_base(url)
        assert base is not None  # validated at configure time
        origin = _safe_origin(base)
        assert origin is not None
        target = EngineTarget(engine_id="public", url=url, online=True, static=True)
        return self._prepare(req, path, base, origin, target, None, key=("public", base),
                             guard=False, public=True, user=None,
                             cache_key=cache_key if req.method == "GET" else None)

    def _refuse_if_open(self, key: tuple[str, str]) -> None:
        retry_after = self.breaker.retry_after(key)
        if retry_after is not None:
            raise unavailable("engine_unavailable",
                              "The engine failed repeatedly; retry after the cool-down",
                              retry_after)

    def _prepare(self, req: Any, path: str, base: str, origin: _Origin, target: EngineTarget,
                 principal: Principal | None, *, key: tuple[str, str], guard: bool,
                 public: bool, user: int | None, cache_key: CacheKey | None = None) -> Outgoing:
        encoded = engine_path(path)
        _refuse_loop(req)
        self._refuse_if_open(key)
        length = req.content_length or 0
        if length > self.settings.max_upload_bytes:
            raise body_too_large(self.settings.max_upload_bytes)
        chunked = not length and _is_chunked(req)
        query = _query_string(req)
        rest = "/api/v1" + encoded
        if query:
            rest += "?" + quote(query.encode("latin-1", "replace"), safe=_QUERY_SAFE)

        headers = self._request_headers(req, principal, target, public)
        if length:
            headers["content-length"] = str(length)
        self.gateway.hook.flowork_proxy_request(
            gateway=self.gateway, principal=principal, target=target, method=req.method,
            path=path, headers=headers,
        )
        sent = [(n, v) for n, v in headers.items() if not self._carries_secret(n, v)]
        if not length and not chunked and req.method in _EMPTY_BODY_METHODS:
            sent.append(("content-length", "0"))  # what httpx.Request would add
        slot = self.limits.acquire(target.engine_id, user)
        if slot is None:
            raise unavailable("engine_busy", "Too many requests in flight to this engine; "
                              "retry shortly", BUSY_RETRY_AFTER_S)
        retries = 1 if req.method in RETRYABLE and not length and not chunked else 0
        return Outgoing(req.method, base + rest, origin, _target(origin, base, rest), sent,
                        length, chunked, key, guard, retries, slot, cache_key)

    # -- the WSGI path: a thread per exchange ---------------------------------------------

    def forward_user(self, req: falcon.Request, resp: falcon.Response, path: str,
                     principal: Principal, target: EngineTarget) -> None:
        self.send_sync(req, resp, self.prepare_user(req, path, principal, target))

    def forward_public(self, req: falcon.Request, resp: falcon.Response, path: str) -> None:
        out = self.prepare_public(req, path)
        if isinstance(out, CachedResponse):
            self._send_cached(resp, out)
        else:
            self.send_sync(req, resp, out)

    def send_sync(self, req: falcon.Request, resp: falcon.Response, out: Outgoing) -> None:
        try:
            self._send_sync(req, resp, out)
        except BaseException:
            out.slot.release()
            raise

    def _send_sync(self, req: falcon.Request, resp: falcon.Response, out: Outgoing) -> None:
        # Never hold a pooled database connection across the engine's answer time.
        self.gateway.release_db()
        origin = out.origin
        raw_headers = [(b"Host", origin.host_header)]
        raw_headers += [(n.encode("latin-1"), _encode(v)) for n, v in out.headers]
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
        policy = self._cache_policy(out, status, raw, content_length)
        if policy is not None:
            assert self.cache is not None and out.cache_key is not None
            prefix, complete = self._read_prefix(upstream, chunks, exchange, out.key)
            if complete:
                data = b"".join(prefix)
                self.cache.store(out.cache_key, status, kept, data, *policy)
                out.slot.release()
                _apply(resp, status, kept)
                resp.data = data
                return

        _apply(resp, status, kept)
        if req.method == "HEAD" or status in _BODILESS or status < 200:
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
                raise GatewayError(504, "engine_timeout", "The engine did not answer in time",
                                   {"Retry-After": "1"}) from None
            except httpx.TimeoutException as exc:
                self._failed(key, exc, "timeout", started)
                raise GatewayError(504, "engine_timeout",
                                   "The engine did not answer in time") from None
            except httpx.LocalProtocolError:
                raise bad_request("The request body is shorter than its Content-Length") from None
            except httpx.TransportError as exc:
                if attempt < retries:
                    attempt += 1
                    continue
                self._failed(key, exc, "unreachable", started)
                raise GatewayError(502, "engine_unreachable",
                                   "The engine could not be reached") from None
            self.breaker.success(key)
            self.upstream_latency.labels("ok").observe(time.perf_counter() - started)
            exchange.headers_received()
            return response

    def _failed(self, key: tuple[str, str], exc: BaseException, outcome: str = "unreachable",
                started: float | None = None) -> None:
        if started is not None:
            self.upstream_latency.labels(outcome).observe(time.perf_counter() - started)
        log.warning("engine %s failed: %s: %s", key[0], type(exc).__name__, exc)
        self.breaker.failure(key)

    def _cache_policy(self, out: Outgoing, status: int, raw: list[tuple[str, str]],
                      content_length: str | None) -> tuple[int, int] | None:
        """(lifetime, age) when this answer is to be stored (judged on the engine's own
        headers, Set-Cookie included), else None. A chunked answer qualifies too; whether it
        fits the entry limit is known only once read."""
        if out.cache_key is None or self.cache is None:
            return None
        if content_length is not None and int(content_length) > self.cache.max_entry_bytes:
            return None
        return freshness(status, [(n.lower(), v) for n, v in raw])

    def _read_prefix(self, upstream: httpx.Response, chunks: Iterator[bytes], exchange: Exchange,
                     key: tuple[str, str]) -> tuple[list[bytes], bool]:
        """Up to the cache's entry limit of the body: (chunks, True) when that was all of
        it; else (chunks read so far, False), the rest still to stream. Failures count as
        before the answer started."""
        assert self.cache is not None
        limit = self.cache.max_entry_bytes
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
            self._failed(key, exc)
            raise GatewayError(504, "engine_timeout", "The engine did not answer in time") from None
        except httpx.TransportError as exc:
            upstream.close()
            self._failed(key, exc)
            raise GatewayError(502, "engine_unreachable", "The engine could not be reached") from None
        upstream.close()
        return read, True

    def _send_cached(self, resp: Any, hit: CachedResponse) -> None:
        assert self.cache is not None
        _apply(resp, hit.status, hit.headers)
        resp.set_header("Age", str(hit.age(self.cache.clock())))
        resp.data = hit.body

    # -- the ASGI path: no thread held while the engine is waited on ----------------------

    def _async_client(self) -> UpstreamClient:
        if self._client is None:  # built on the serving loop, on first use
            self._client = UpstreamClient(max_connections=self.settings.max_connections,
                                          address_policy=self.policy)
        return self._client

    async def send_async(self, req: Any, resp: Any, out: Outgoing) -> None:
        """Send ``out``, streaming the client's body from ``req.stream`` as it arrives, and set
        ``resp`` to stream the engine's answer back (``resp.stream``, an async iterator)."""
        try:
            await self._send_async(req, resp, out)
        except BaseException:
            out.slot.release()
            raise

    async def _send_async(self, req: Any, resp: Any, out: Outgoing) -> None:
        receive = getattr(req, "_receive", None)  # Falcon keeps the ASGI receive here
        # Without a body to read, the next ASGI event can only be the client's disconnect:
        # watch for it from the start, so a client that gives up while the engine thinks
        # frees its place at once (the exchange is cancelled).
        watch = (_ClientWatch(receive, asyncio.current_task())
                 if receive is not None and not out.has_body else None)
        try:
            await self._exchange_async(req, resp, out, watch, receive)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if watch is None or not watch.gone or task is None:
                raise
            task.uncancel()  # our own cancel: the client left, nobody reads an answer
            out.slot.release()
            resp.status = 499  # nginx's "client closed request", for the access log only
            resp.data = b""
            return
        finally:
            if watch is not None and not watch.handed:
                watch.stop()

    async def _exchange_async(self, req: Any, resp: Any, out: Outgoing,
                              watch: _ClientWatch | None, receive: Any) -> None:
        client = self._async_client()
        timeouts = Timeouts(connect_s=self.settings.connect_timeout_s,
                            read_s=self.settings.read_timeout_s,
                            # Silence before the headers is bounded by the read timeout
                            # too, as on the WSGI path (a socket read there).
                            headers_s=min(self.settings.timeout_s, self.settings.read_timeout_s),
                            max_duration_s=self.settings.max_duration_s)
        headers = [("host", out.origin.host_header.decode("latin-1")), *out.headers]
        upload = (_AsyncUpload(req.stream, self.settings.max_upload_bytes, out.length)
                  if out.has_body else None)
        attempt = 0
        started = time.perf_counter()
        while True:
            try:
                upstream = await client.request(out.method, out.url, headers, upload,
                                                timeouts=timeouts, guard=out.guard)
                break
            except Exception as exc:
                # The client's own body first: its faults are never the engine's.
                if upload is not None and upload.too_large:
                    raise body_too_large(self.settings.max_upload_bytes) from None
                if upload is not None and upload.failed:
                    raise bad_request("The request body ended before it was complete") from None
                if not isinstance(exc, UpstreamError):
                    raise
                if isinstance(exc, UpstreamTimeout):
                    self._failed(out.key, exc, "timeout", started)
                    raise GatewayError(504, "engine_timeout",
                                       "The engine did not answer in time") from None
                if attempt < out.retries:  # refused, reset, dropped: nothing was answered
                    attempt += 1
                    continue
                self._failed(out.key, exc, "unreachable", started)
                raise GatewayError(502, "engine_unreachable",
                                   "The engine could not be reached") from None
        self.breaker.success(out.key)
        self.upstream_latency.labels("ok").observe(time.perf_counter() - started)

        status = upstream.status
        kept, content_length = response_headers(upstream.headers)
        chunks = upstream.__aiter__()
        prefix: list[bytes] = []
        policy = self._cache_policy(out, status, upstream.headers, content_length)
        try:
            if policy is not None:
                assert self.cache is not None and out.cache_key is not None
                prefix, complete = await self._read_prefix_async(upstream, chunks, out.key)
                if complete:
                    data = b"".join(prefix)
                    self.cache.store(out.cache_key, status, kept, data, *policy)
                    out.slot.release()
                    _apply(resp, status, kept)
                    resp.data = data
                    return
        except BaseException:
            await upstream.aclose()
            raise

        _apply(resp, status, kept)
        if req.method == "HEAD" or status in _BODILESS or status < 200:
            await upstream.aclose()
            out.slot.release()
            if content_length is not None and req.method == "HEAD":
                resp.set_header("Content-Length", content_length)
            resp.stream = _EMPTY_ASYNC  # truthy: Falcon would otherwise claim Content-Length 0
            return
        if content_length is not None:
            resp.set_header("Content-Length", content_length)
        if watch is None and receive is not None and upload is not None and upload.done:
            watch = _ClientWatch(receive, None)  # the body is all read: receive is free now
        if watch is not None:
            watch.stream(upstream)
        resp.stream = AsyncUpstreamBody(upstream, chunks, out.slot, prefix, watch)

    async def _read_prefix_async(self, upstream: UpstreamResponse, chunks: AsyncIterator[bytes],
                                 key: tuple[str, str]) -> tuple[list[bytes], bool]:
        assert self.cache is not None
        limit = self.cache.max_entry_bytes
        read: list[bytes] = []
        size = 0
        try:
            async for chunk in chunks:
                read.append(chunk)
                size += len(chunk)
                if size > limit:
                    return read, False
        except UpstreamError as exc:
            await upstream.aclose()
            self._failed(key, exc)
            if isinstance(exc, UpstreamTimeout):
                raise GatewayError(504, "engine_timeout",
                                   "The engine did not answer in time") from None
            raise GatewayError(502, "engine_unreachable", "The engine could not be reached") from None
        await upstream.aclose()
        return read, True

    # -- header hygiene ----------------------------------------------------------------------

    def _trusted(self, peer: str | None) -> bool:
        networks = self.settings.trusted_proxies
        if not networks or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in networks)

    def _request_headers(self, req: Any, principal: Principal | None,
                         target: EngineTarget, public: bool) -> dict[str, str]:
        """The headers to forward (lowercase names), per API.md's removed/kept/added lists."""
        received = _client_headers(req)
        named = received.get("connection", "")
        connection = {t.strip().lower() for t in named.split(",")} if named else set()
        trusted = self._trusted(req.remote_addr)
        headers: dict[str, str] = {}
        for name, value in received.items():
            if name in _REQUEST_DROP or name in connection:
                continue
            if not trusted and (name in _CLIENT_ADDRESS or name.startswith("x-forwarded-")):
                continue
            if name in (self.credential_headers if public else self.foreign_credential_headers):
                continue
            if _TOKEN.match(name) and _VALUE.match(value):
                headers[name] = value

        peer = req.remote_addr or ""
        chain = headers.get("x-forwarded-for")  # present only from a trusted proxy
        headers["x-forwarded-for"] = f"{chain}, {peer}" if chain else peer
        headers.setdefault("x-forwarded-proto", req.scheme)
        headers.setdefault("x-forwarded-host", received.get("host") or req.host)
        via = headers.get("via")
        headers["via"] = f"{via}, {VIA}" if via else VIA
        headers["x-request-id"] = req.context.request_id
        if not public:
            headers["x-flowork-engine-id"] = target.engine_id
            if principal is not None and principal.account is not None:
                headers["x-flowork-user-id"] = principal.account.public_address
        return headers

    @functools.cached_property
    def secrets(self) -> tuple[bytes, ...]:
        """Secrets the enabled auth schemes hold (the service key): never sent to an engine.
        Read on first use: the schemes are collected after ``gateway_configure``."""
        return tuple(secret for schemes in self.gateway.schemes.values()
                     for scheme in schemes for secret in scheme.secrets() if secret)

    def _carries_secret(self, name: str, value: str) -> bool:
        """True if a header (say, added by a hook) carries a secret of an auth scheme."""
        found = False
        for secret in self.secrets:
            if len(value) < len(secret):  # too short to carry it
                continue
            found |= hmac.compare_digest(_encode(value), secret)
            for token in _SECRET_SPLIT.split(value):
                found |= hmac.compare_digest(_encode(token), secret)
        if found:
            log.warning("dropped header %s from a proxied request: it carried the gateway secret",
                        name)
        return found


BUSY_RETRY_AFTER_S = 1
#: Who we are in ``Via`` (RFC 9110 §7.6.3 pseudonym): shared by every instance, so a loop
#: through a load balancer in front of several instances is caught too.
VIA_NAME = "flowork-gateway"


def _refuse_loop(req: Any) -> None:
    """508 ``proxy_loop`` when the request already passed through a Flowork gateway."""
    via = req.get_header("Via")
    if via and any(VIA_NAME in part.split()[1:2] for part in via.split(",")):
        raise GatewayError(508, "proxy_loop", "The request looped back to the gateway")


def _client_headers(req: Any) -> Mapping[str, str]:
    """The client's request headers, lowercase names, from a WSGI environ or (ASGI) Falcon's
    own map of them (the scope's list may be a one-shot iterator)."""
    env = getattr(req, "env", None)
    headers: dict[str, str] = {}
    if env is not None:
        for key, value in env.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = value
            elif key == "CONTENT_TYPE" and value:
                headers["content-type"] = value
        return headers
    return req.headers


def _query_string(req: Any) -> str:
    env = getattr(req, "env", None)
    if env is not None:
        return env.get("QUERY_STRING", "")
    return req.scope.get("query_string", b"").decode("latin-1")


def _is_chunked(req: Any) -> bool:
    """A body without Content-Length (only under ASGI: waitress hands the app a length)."""
    if getattr(req, "env", None) is not None:
        return False
    encoding = req.get_header("Transfer-Encoding")
    return bool(encoding) and "chunked" in encoding.lower()


@functools.lru_cache(maxsize=4096)
def _safe_origin(base: str) -> _Origin | None:
    """The parsed origin, or None for a URL httpx refuses (an empty or over-long host label,
    a malformed IPv6 literal...)."""
    try:
        origin = _origin(base)
        host = origin.address[1].decode("ascii")
        if not host.startswith("[") and not host.replace(".", "").isdigit():
            host.encode("idna")  # what the resolver will do: empty or over-long labels fail
    except (httpx.InvalidURL, ValueError, UnicodeError):
        return None
    return origin


def _encode(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


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


class _AsyncUpload:
    """The client's body from ``req.stream`` (Falcon ASGI) as it arrives, refused beyond
    ``limit`` bytes (a chunked body has no length to refuse up front); a body shorter than its
    declared ``length`` (the client went away) fails the upload rather than completing it."""

    __slots__ = ("done", "failed", "length", "limit", "stream", "too_large")

    def __init__(self, stream: Any, limit: int, length: int) -> None:
        self.stream = stream
        self.limit = limit
        self.length = length
        self.done = False
        self.failed = False
        self.too_large = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        try:
            async for chunk in self.stream:
                sent += len(chunk)
                if sent > self.limit:
                    self.too_large = True
                    raise ValueError("request body over the limit")
                if chunk:
                    yield chunk
            if self.length and sent != self.length:
                raise ValueError("request body shorter than its Content-Length")
        except Exception:
            self.failed = True
            raise
        self.done = True


def response_headers(raw: Any) -> tuple[list[tuple[str, str]], str | None]:
    """The engine's headers (name, value pairs as received) minus hop-by-hop ones (and those
    ``Connection`` names), lowercase names, with Content-Length split out."""
    pairs = [(n.lower(), v) for n, v in raw]
    connection = {t.strip().lower() for n, v in pairs if n == "connection" for t in v.split(",")}
    kept: list[tuple[str, str]] = []
    content_length = None
    for name, value in pairs:
        if name == "content-length":
            content_length = value.strip() if value.strip().isdigit() else None
        elif name == "content-type":
            kept.append((name, value))
        elif (name not in _RESPONSE_DROP and name not in connection
              and not name.startswith("access-control-")):
            kept.append((name, value))
    return kept, content_length


def _apply(resp: Any, status: int, headers: Any) -> None:
    resp.status = status
    content_type = None
    for name, value in headers:
        if name == "content-type":
            content_type = value
        else:
            resp.append_header(name, value)
    if content_type is not None:
        resp.content_type = content_type
    elif status >= 200 and status not in _BODILESS:
        # Without this Falcon would label the engine's bytes with its default, JSON.
        resp.content_type = "application/octet-stream"
    resp.append_header("Via", VIA)


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
            raise UpstreamAborted(f"engine response broke off: {type(exc).__name__}") from None
        finally:
            Exchange.leave(token)

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            self._slot.release()


class _ClientWatch:
    """Waits for the client's ``http.disconnect`` (call only once the request body is all
    read: until then ``receive`` delivers the body). Uvicorn tells an app that its client
    left through ``receive()`` only, so without this an abandoned exchange would linger until
    the engine's next byte or a timeout. On disconnect: before the answer streams, the
    handling task is cancelled; while it streams, the engine's response is closed, which
    wakes a pending read."""

    __slots__ = ("_response", "_task", "_watcher", "gone", "handed")

    def __init__(self, receive: Any, task: asyncio.Task[Any] | None) -> None:
        self.gone = False
        self.handed = False
        self._task = task
        self._response: UpstreamResponse | None = None
        self._watcher = asyncio.ensure_future(self._run(receive))

    def stream(self, response: UpstreamResponse) -> None:
        """The answer streams now: on disconnect close ``response`` instead of cancelling."""
        self._task = None
        self._response = response
        self.handed = True

    async def _run(self, receive: Any) -> None:
        try:
            while True:
                event = await receive()
                if event.get("type") == "http.disconnect":
                    break
        except Exception:  # the server's receive failed: treat the client as gone
            log.debug("receive() failed while proxying", exc_info=True)
        self.gone = True
        if self._response is not None:
            await self._response.aclose()
        elif self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        watcher = self._watcher
        if not watcher.done() and watcher is not asyncio.current_task():
            watcher.cancel()


class AsyncUpstreamBody:
    """The ASGI response stream (Falcon awaits ``close()`` after the last chunk, after an
    error, and when it stops early): the engine's raw bytes as they arrive. A
    :class:`_ClientWatch` closes the engine's response when the client leaves."""

    __slots__ = ("_chunks", "_closed", "_prefix", "_response", "_slot", "_watch")

    def __init__(self, response: UpstreamResponse, chunks: AsyncIterator[bytes], slot: Slot,
                 prefix: list[bytes], watch: _ClientWatch | None) -> None:
        self._response = response
        self._chunks = chunks
        self._slot = slot
        self._prefix = prefix or None
        self._closed = False
        self._watch = watch

    def __aiter__(self) -> AsyncUpstreamBody:
        return self

    async def __anext__(self) -> bytes:
        if self._prefix:
            return self._prefix.pop(0)
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            await self.close()
            raise
        except UpstreamError as exc:
            await self.close()
            if self._watch is not None and self._watch.gone:  # closed because the client left
                raise StopAsyncIteration from None
            log.warning("engine response broke off: %s: %s", type(exc).__name__, exc)
            raise UpstreamAborted(f"engine response broke off: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.stop()
        try:
            await self._response.aclose()
        finally:
            self._slot.release()


class _EmptyAsync:
    """An async iterator with nothing in it, truthy (Falcon tests ``resp.stream``)."""

    def __aiter__(self) -> _EmptyAsync:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


_EMPTY_ASYNC = _EmptyAsync()
