"""Forward one request to an engine and stream its answer back (API.md, "Proxy").

One :class:`Forwarder` per gateway owns the shared pooled httpx transport, the circuit breaker
and the public cache. Bodies stream both ways in chunks; nothing holds a whole body in memory except
the (bounded) public cache.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import falcon
import httpx

from gateway_kernel.errors import GatewayError, bad_request, not_found, unavailable
from gateway_kernel.http import body_stream, body_too_large

from .breaker import CircuitBreaker
from .cache import CachedResponse, CacheKey, ResponseCache, freshness
from .hookspecs import EngineTarget
from .transport import EngineTransport, Exchange

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


class Forwarder:
    """Header hygiene, deadline, retries, circuit breaker and streaming for one gateway."""

    def __init__(self, gateway: Gateway, settings: ProxySettings) -> None:
        self.gateway = gateway
        self.settings = settings
        # One pooled transport per gateway, used directly rather than through httpx.Client:
        # the Client's extras are all wrong for a proxy (a cookie jar shared by every user,
        # redirect following, auth flows, environment proxies) and cost ~10-20% of proxied
        # throughput (bench/bench_proxy.py). The transport never follows redirects and never
        # reads the environment.
        self.transport = EngineTransport(settings.max_connections, keepalive_expiry=4.0)
        self.timeouts = httpx.Timeout(
            connect=settings.connect_timeout_s, read=settings.read_timeout_s,
            write=settings.read_timeout_s, pool=settings.connect_timeout_s,
        ).as_dict()
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self.cache = (ResponseCache(settings.cache_bytes, settings.cache_entry_bytes)
                      if settings.cache_bytes > 0 else None)
        found, secret = gateway.config.raw("GATEWAY_SECRET_TOKEN")
        self.secret = secret.strip().encode() if found and isinstance(secret, str) else b""

    def close(self) -> None:
        self.transport.close()

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

    # -- entry points ------------------------------------------------------------------------

    def forward_user(self, req: falcon.Request, resp: falcon.Response, path: str,
                     principal: Principal, target: EngineTarget) -> None:
        base = engine_base(target.url or "")
        if base is None:
            log.warning("engine %s has an unusable URL; not proxying", target.engine_id)
            raise GatewayError(502, "engine_unreachable", "The engine could not be reached")
        self._forward(req, resp, path, base, target, principal, key=(target.engine_id, base),
                      guard=not target.static, public=False)

    def forward_public(self, req: falcon.Request, resp: falcon.Response, path: str) -> None:
        url = self.settings.public_engine_url
        if url is None:
            raise unavailable("no_public_engine", "No public engine is configured")
        encoded = engine_path(path)
        cache_key = None
        if self.cache is not None and req.method in ("GET", "HEAD"):
            cache_key = (encoded, req.query_string,
                         (req.get_header("Accept-Encoding") or "").replace(" ", "").lower())
            hit = self.cache.get(cache_key)
            if hit is not None:
                self._send_cached(resp, hit)
                return
        base = engine_base(url)
        assert base is not None  # validated at configure time
        target = EngineTarget(engine_id="public", url=url, online=True, static=True)
        self._forward(req, resp, path, base, target, None, key=("public", base), guard=False,
                      public=True, cache_key=cache_key if req.method == "GET" else None)

    # -- forwarding --------------------------------------------------------------------------

    def _forward(self, req: falcon.Request, resp: falcon.Response, path: str, base: str,
                 target: EngineTarget, principal: Principal | None, *, key: tuple[str, str],
                 guard: bool, public: bool, cache_key: CacheKey | None = None) -> None:
        encoded = engine_path(path)
        retry_after = self.breaker.retry_after(key)
        if retry_after is not None:
            raise unavailable("engine_unavailable",
                              "The engine failed repeatedly; retry after the cool-down",
                              retry_after)
        length = req.content_length or 0
        if length > self.settings.max_upload_bytes:
            raise body_too_large(self.settings.max_upload_bytes)
        query = _raw_query(req)
        rest = "/api/v1" + encoded
        if query:
            rest += "?" + quote(query, safe=_QUERY_SAFE)
        origin = _origin(base)

        headers = self._request_headers(req, principal, target, public)
        if length:
            headers["content-length"] = str(length)
        self.gateway.hook.flowork_proxy_request(
            gateway=self.gateway, principal=principal, target=target, method=req.method,
            path=path, headers=headers,
        )
        # What httpx.Request would add: Host first, an empty body's length for POST/PUT/PATCH.
        raw_headers = [(b"Host", origin.host_header)]
        raw_headers += [(n.encode("latin-1"), _encode(v)) for n, v in headers.items()
                        if not self._carries_secret(n, v)]
        if not length and req.method in _EMPTY_BODY_METHODS:
            raw_headers.append((b"Content-Length", b"0"))

        # Never hold a pooled database connection across the engine's answer time.
        self.gateway.release_db()
        exchange = Exchange(self.settings.timeout_s, self.settings.max_duration_s, guard,
                            uploading=bool(length))
        body = _upload(body_stream(req), length, exchange) if length else None
        retries = 1 if req.method in RETRYABLE and body is None else 0
        upstream = self._send(req.method, origin.address, _target(origin, base, rest), raw_headers,
                              body, exchange, key, retries)

        status = upstream.status_code
        kept, content_length = _response_headers(upstream)
        if cache_key is not None and self.cache is not None and content_length is not None:
            # Judged on the engine's own headers (Set-Cookie included), stored after hygiene.
            policy = freshness(status, [(n.decode("latin-1").lower(), v.decode("latin-1"))
                                        for n, v in upstream.headers.raw])
            if policy is not None and int(content_length) <= self.cache.max_entry_bytes:
                data = self._read_all(upstream, exchange, key)
                self.cache.store(cache_key, status, kept, data, *policy)
                _apply(resp, status, kept)
                resp.data = data
                return

        _apply(resp, status, kept)
        if req.method == "HEAD" or status in _BODILESS or status < 200:
            upstream.close()
            if content_length is not None and req.method == "HEAD":
                resp.set_header("Content-Length", content_length)
            resp.stream = ()  # an empty iterable: Falcon would otherwise claim Content-Length 0
            return
        if content_length is not None:
            resp.set_header("Content-Length", content_length)
        resp.stream = UpstreamBody(upstream, exchange)

    def _send(self, method: str, origin: tuple[bytes, bytes, int | None], target: bytes,
              headers: list[tuple[bytes, bytes]], body: Iterator[bytes] | None,
              exchange: Exchange, key: tuple[str, str], retries: int) -> httpx.Response:
        """Send, retrying transport failures of body-less idempotent requests (nothing has
        reached the client yet); map failures to the API's errors and feed the breaker."""
        attempt = 0
        raw_method = method.upper().encode("ascii")
        extensions = {"timeout": self.timeouts}
        while True:
            try:
                with exchange.active():
                    response = self.transport.send(raw_method, origin, target, headers,
                                                   body if body is not None else b"", extensions)
            except httpx.PoolTimeout:  # our own pool is exhausted: not the engine's fault
                raise GatewayError(504, "engine_timeout", "The engine did not answer in time",
                                   {"Retry-After": "1"}) from None
            except httpx.TimeoutException as exc:
                self._failed(key, exc)
                raise GatewayError(504, "engine_timeout",
                                   "The engine did not answer in time") from None
            except httpx.LocalProtocolError:
                raise bad_request("The request body is shorter than its Content-Length") from None
            except httpx.TransportError as exc:
                if attempt < retries:
                    attempt += 1
                    continue
                self._failed(key, exc)
                raise GatewayError(502, "engine_unreachable",
                                   "The engine could not be reached") from None
            self.breaker.success(key)
            exchange.headers_received()
            return response

    def _failed(self, key: tuple[str, str], exc: Exception) -> None:
        log.warning("engine %s failed: %s: %s", key[0], type(exc).__name__, exc)
        self.breaker.failure(key)

    def _read_all(self, upstream: httpx.Response, exchange: Exchange,
                  key: tuple[str, str]) -> bytes:
        """The whole (small, cacheable) body, raw; failures as before the answer started."""
        try:
            with exchange.active():
                return b"".join(upstream.iter_raw())
        except httpx.TimeoutException as exc:
            self._failed(key, exc)
            raise GatewayError(504, "engine_timeout", "The engine did not answer in time") from None
        except httpx.TransportError as exc:
            self._failed(key, exc)
            raise GatewayError(502, "engine_unreachable", "The engine could not be reached") from None
        finally:
            upstream.close()

    def _send_cached(self, resp: falcon.Response, hit: CachedResponse) -> None:
        assert self.cache is not None
        _apply(resp, hit.status, hit.headers)
        resp.set_header("Age", str(hit.age(self.cache.clock())))
        resp.data = hit.body

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

    def _request_headers(self, req: falcon.Request, principal: Principal | None,
                         target: EngineTarget, public: bool) -> dict[str, str]:
        """The headers to forward (lowercase names), per API.md's removed/kept/added lists."""
        received = req.headers_lower  # lowercase names on both servers (WSGI and ASGI)
        named = received.get("connection", "")
        connection = {t.strip().lower() for t in named.split(",")} if named else set()
        trusted = self._trusted(req.remote_addr)
        headers: dict[str, str] = {}
        for name, value in received.items():
            if name == "content-type" and not value:
                continue
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

    def _carries_secret(self, name: str, value: str) -> bool:
        """True if a header (say, added by a hook) carries the gateway's service secret."""
        if not self.secret or len(value) < len(self.secret):  # too short to carry it
            return False
        raw = _encode(value)
        found = hmac.compare_digest(raw, self.secret)
        for token in _SECRET_SPLIT.split(value):
            found |= hmac.compare_digest(_encode(token), self.secret)
        if found:
            log.warning("dropped header %s from a proxied request: it carried the gateway secret",
                        name)
        return found


def _encode(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _raw_query(req: falcon.Request) -> bytes:
    """The query string as received (ASGI: the raw bytes; WSGI: latin-1, as PEP 3333 says)."""
    scope = getattr(req, "scope", None)
    if scope is not None:
        return scope.get("query_string", b"")
    return req.query_string.encode("latin-1", "replace")


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


def _response_headers(upstream: httpx.Response) -> tuple[list[tuple[str, str]], str | None]:
    """The engine's headers minus hop-by-hop ones (and those ``Connection`` names), with
    Content-Length split out."""
    raw = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in upstream.headers.raw]
    connection = {t.strip().lower() for n, v in raw if n == "connection" for t in v.split(",")}
    kept: list[tuple[str, str]] = []
    content_length = None
    for name, value in raw:
        if name == "content-length":
            content_length = value.strip() if value.strip().isdigit() else None
        elif name == "content-type":
            kept.append((name, value))
        elif (name not in _RESPONSE_DROP and name not in connection
              and not name.startswith("access-control-")):
            kept.append((name, value))
    return kept, content_length


def _apply(resp: falcon.Response, status: int, headers: Any) -> None:
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
    the engine's response, which drops an unfinished upstream connection.
    """

    __slots__ = ("_chunks", "_exchange", "_response")

    def __init__(self, response: httpx.Response, exchange: Exchange) -> None:
        self._response = response
        self._exchange = exchange
        self._chunks = response.iter_raw()

    def __iter__(self) -> UpstreamBody:
        return self

    def __next__(self) -> bytes:
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
        self._response.close()
