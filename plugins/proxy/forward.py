"""Forward one request to an engine and stream its answer back (API.md, "Proxy").

One :class:`Forwarder` per gateway owns what both servers share: the circuit breaker, the
fairness bounds, the public cache, the header policy and the metrics. It decides everything
but the I/O (target, header hygiene, limits, breaker, cache policy) once for both servers:
:meth:`Forwarder.prepare_user` / :meth:`Forwarder.prepare_public` return an :class:`Outgoing`.
The I/O is one module per server, each with its own upstream client: ``sync_path.py`` (the
WSGI server, waitress: a thread per exchange, the pooled transport of ``transport.py``) and
``async_path.py`` (the ASGI server: no thread held while the engine is waited on, the client
of ``upstream.py``). Bodies stream both ways in chunks; nothing holds a whole body in memory
except the (bounded) public cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway_kernel import netpolicy

from . import errors
from .async_path import AsyncPath
from .breaker import CircuitBreaker
from .cache import CachedResponse, CacheKey, ResponseCache, freshness
from .fairness import ConcurrencyLimits, Slot
from .headers import HeaderPolicy, apply_response, is_chunked, refuse_loop
from .hookspecs import EngineTarget
from .settings import ProxySettings
from .sync_path import SyncPath
from .urls import (
    Origin,
    engine_base,
    engine_path,
    engine_query,
    query_string,
    request_target,
    safe_origin,
)

if TYPE_CHECKING:
    from gateway_kernel import Gateway, Principal

log = logging.getLogger("gateway_plugins.proxy")

#: Methods retried once on a transport failure when they carry no body (nothing was answered).
RETRYABLE = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_EMPTY_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # httpx sends Content-Length: 0


@dataclass
class Outgoing:
    """One request ready to go to an engine: everything decided before any network I/O, the
    same for the WSGI (threaded) and ASGI (event loop) paths."""

    method: str
    url: str  # base + rest, for the async client
    origin: Origin  # for the sync transport
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
    servers); :meth:`send_sync` and :meth:`send_async` do the I/O (``sync_path.py``,
    ``async_path.py``)."""

    def __init__(self, gateway: Gateway, settings: ProxySettings) -> None:
        self.gateway = gateway
        self.settings = settings
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self.limits = ConcurrencyLimits(settings.max_per_engine, settings.max_per_user)
        self.cache = (ResponseCache(settings.cache_bytes, settings.cache_entry_bytes)
                      if settings.cache_bytes > 0 else None)
        self.headers = HeaderPolicy(gateway, settings.trusted_proxies)
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
        self.sync = SyncPath(self)
        self.aio = AsyncPath(self)

    @property
    def credential_headers(self) -> frozenset[str]:
        """Headers of every enabled auth scheme: never forwarded by a public proxy."""
        return self.headers.credential_headers

    @property
    def foreign_credential_headers(self) -> frozenset[str]:
        """Headers of the non-``user`` schemes: never forwarded with a user's request."""
        return self.headers.foreign_credential_headers

    # -- lifecycle ---------------------------------------------------------------------------

    def shutdown(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Close both paths' connections (the async client's on ``loop``, the serving loop,
        when it still runs)."""
        self.sync.close()
        self.aio.close_on(loop)

    # -- deciding (no network I/O; runs in a worker thread under ASGI) --------------------

    def prepare_user(self, req: Any, path: str, principal: Principal,
                     target: EngineTarget) -> Outgoing:
        url = target.url or ""
        base = engine_base(url)
        origin = safe_origin(base) if base is not None else None
        if base is None or origin is None:
            # A stored URL the proxy cannot use is the engine's failure like any other:
            # 502, and it counts towards the breaker (so it is not retried forever).
            key = (target.engine_id, url)
            self._refuse_if_open(key)
            log.warning("engine %s has an unusable URL; not proxying", target.engine_id)
            self.breaker.failure(key)
            raise errors.engine_unreachable()
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
        refuse_loop(req)
        return self.cache.get(key) if self.cache is not None else None

    def _cache_key(self, req: Any, encoded: str) -> CacheKey | None:
        if self.cache is None or req.method not in ("GET", "HEAD"):
            return None
        return (encoded, query_string(req),
                (req.get_header("Accept-Encoding") or "").replace(" ", "").lower())

    def prepare_public(self, req: Any, path: str) -> Outgoing | CachedResponse:
        """The request for the public engine, or the cached answer to send instead."""
        url = self.settings.public_engine_url
        if url is None:
            raise errors.no_public_engine()
        encoded = engine_path(path)
        refuse_loop(req)
        cache_key = self._cache_key(req, encoded)
        if cache_key is not None:
            assert self.cache is not None
            hit = self.cache.get(cache_key)
            if hit is not None:
                return hit
        base = engine_base(url)
        assert base is not None  # validated at configure time
        origin = safe_origin(base)
        assert origin is not None
        target = EngineTarget(engine_id="public", url=url, online=True, static=True)
        return self._prepare(req, path, base, origin, target, None, key=("public", base),
                             guard=False, public=True, user=None,
                             cache_key=cache_key if req.method == "GET" else None)

    def _refuse_if_open(self, key: tuple[str, str]) -> None:
        retry_after = self.breaker.retry_after(key)
        if retry_after is not None:
            raise errors.engine_unavailable(retry_after)

    def _prepare(self, req: Any, path: str, base: str, origin: Origin, target: EngineTarget,
                 principal: Principal | None, *, key: tuple[str, str], guard: bool,
                 public: bool, user: int | None, cache_key: CacheKey | None = None) -> Outgoing:
        encoded = engine_path(path)
        refuse_loop(req)
        self._refuse_if_open(key)
        length = req.content_length or 0
        if length > self.settings.max_upload_bytes:
            raise errors.upload_too_large(self.settings.max_upload_bytes)
        chunked = not length and is_chunked(req)
        query = query_string(req)
        rest = "/api/v1" + encoded
        if query:
            rest += "?" + engine_query(query)

        headers = self.headers.request_headers(req, principal, target, public)
        if length:
            headers["content-length"] = str(length)
        self.gateway.hook.flowork_proxy_request(
            gateway=self.gateway, principal=principal, target=target, method=req.method,
            path=path, headers=headers,
        )
        carries_secret = self.headers.carries_secret
        sent = [(n, v) for n, v in headers.items() if not carries_secret(n, v)]
        if not length and not chunked and req.method in _EMPTY_BODY_METHODS:
            sent.append(("content-length", "0"))  # what httpx.Request would add
        slot = self.limits.acquire(target.engine_id, user)
        if slot is None:
            raise errors.engine_busy()
        retries = 1 if req.method in RETRYABLE and not length and not chunked else 0
        return Outgoing(req.method, base + rest, origin, request_target(origin, base, rest), sent,
                        length, chunked, key, guard, retries, slot, cache_key)

    # -- the I/O: one module per server ----------------------------------------------------

    def send_sync(self, req: Any, resp: Any, out: Outgoing) -> None:
        """The WSGI server's exchange (``sync_path.py``)."""
        self.sync.send(req, resp, out)

    async def send_async(self, req: Any, resp: Any, out: Outgoing) -> None:
        """The ASGI server's exchange (``async_path.py``)."""
        await self.aio.send(req, resp, out)

    # -- shared by both paths -----------------------------------------------------------------

    def succeeded(self, key: tuple[str, str], started: float) -> None:
        """The engine answered with its headers: close its breaker, time the exchange."""
        self.breaker.success(key)
        self.upstream_latency.labels("ok").observe(time.perf_counter() - started)

    def failed(self, key: tuple[str, str], exc: BaseException, outcome: str = "unreachable",
               started: float | None = None) -> None:
        """The engine failed (``outcome``: timeout or unreachable): feed its breaker."""
        if started is not None:
            self.upstream_latency.labels(outcome).observe(time.perf_counter() - started)
        log.warning("engine %s failed: %s: %s", key[0], type(exc).__name__, exc)
        self.breaker.failure(key)

    def cache_policy(self, out: Outgoing, status: int, raw: list[tuple[str, str]],
                     content_length: str | None) -> tuple[int, int] | None:
        """(lifetime, age) when this answer is to be stored (judged on the engine's own
        headers, Set-Cookie included), else None. A chunked answer qualifies too; whether it
        fits the entry limit is known only once read."""
        if out.cache_key is None or self.cache is None:
            return None
        if content_length is not None and int(content_length) > self.cache.max_entry_bytes:
            return None
        return freshness(status, [(n.lower(), v) for n, v in raw])

    def send_whole(self, resp: Any, out: Outgoing, status: int, kept: list[tuple[str, str]],
                   data: bytes, policy: tuple[int, int]) -> None:
        """A cacheable answer read whole: store it, answer it, give the slot back."""
        assert self.cache is not None and out.cache_key is not None
        self.cache.store(out.cache_key, status, kept, data, *policy)
        out.slot.release()
        apply_response(resp, status, kept)
        resp.data = data

    def send_cached(self, resp: Any, hit: CachedResponse) -> None:
        """Answer from the public cache."""
        assert self.cache is not None
        apply_response(resp, hit.status, hit.headers)
        resp.set_header("Age", str(hit.age(self.cache.clock())))
        resp.data = hit.body
