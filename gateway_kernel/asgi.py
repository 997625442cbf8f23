"""The gateway as a native ASGI application (``falcon.asgi.App``) over the same plugins.

Plugin code stays synchronous (peewee). What the kernel can answer without a database runs on
the event loop (request id, CORS, preflights; a route's own ``on_<method>_async`` responders,
such as a fresh health answer); everything else runs in
the kernel's bounded thread pool through :meth:`Gateway.run_sync`:

- a request without a body: one hop (authenticate, then the responder);
- a request with a body: authenticate (hop), refuse a declared length above the route's limit
  (413, nothing read), read the body on the loop with a bound, then the responder (hop). The
  body reaches ``gateway_kernel.http.read_body`` through ``req.context.prefetched_body``;
- a sink with an ``async_handler``: authenticate (hop), then the handler on the loop, which
  streams the body itself;
- a synchronous sink: authenticate (hop), then the handler (hop), which reads the body through
  ``gateway_kernel.http.body_stream`` as it goes, each read done on the loop (bounded memory).

Errors go through the same handlers and serializer as under WSGI, so answers are identical.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from .api import API_PREFIX
from .errors import GatewayError, handle_unexpected
from .http import body_too_large
from .middleware import database_down, install_error_handlers
from .observe import set_route, sink_route
from .routing import sink_pattern

if TYPE_CHECKING:
    from .api import Route, Sink
    from .app import Gateway

log = logging.getLogger("gateway_kernel.asgi")

_NO_BODY = (None, 0)


def _has_body(req: falcon.asgi.Request) -> bool:
    if req.content_length not in _NO_BODY:
        return True
    encoding = req.get_header("Transfer-Encoding")
    return bool(encoding) and "chunked" in encoding.lower()


async def prefetch_body(req: falcon.asgi.Request, limit: int, silence_s: float) -> None:
    """Read the whole body (at most ``limit`` bytes, else 413) into ``req.context``; a client
    silent for ``silence_s`` while sending it gets a 408 (it holds no thread meanwhile, but
    it should not hold its connection forever either)."""
    length = req.content_length
    if length is not None and length > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    stream = req.stream
    while True:
        try:
            chunk = await asyncio.wait_for(stream.read(min(limit + 1 - size, _READ_SIZE)), silence_s)
        except TimeoutError:
            raise GatewayError(408, "request_timeout", "The request body did not arrive in time",
                               {"Connection": "close"}) from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    req.context.prefetched_body = b"".join(chunks)


_READ_SIZE = 64 * 1024


def _close_if_unread(req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
    """A request answered before its body was read (401, 413) closes its connection, so the
    client's unread body is never received."""
    if not req.stream.eof:
        resp.set_header("Connection", "close")


_EMPTY_BODY_PENDING = {"type": "http.request", "body": b"", "more_body": True}


class BodyDeferred:
    """Falcon's ASGI app awaits the first ``http.request`` event before routing; for a
    request with a body the server delivers it only once body bytes arrive. This hands Falcon
    an empty first event instead, so the caller is authenticated (and a declared length
    refused) before any of the body is waited for or read."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and _declares_body(scope):
            first = True

            async def deferred_receive() -> dict:
                nonlocal first
                if first:
                    first = False
                    return dict(_EMPTY_BODY_PENDING)
                return await receive()

            await self.app(scope, deferred_receive, send)
            return
        await self.app(scope, receive, send)


def _declares_body(scope: dict) -> bool:
    headers = scope["headers"]
    if not isinstance(headers, list) or (headers and not isinstance(headers[0], (tuple, list))):
        # ASGI allows any iterables (falcon.testing hands out one-shot iterators): read them
        # once, into the list the app will see too.
        headers = scope["headers"] = [tuple(item) for item in headers]
    for name, value in headers:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class BlockingBody:
    """A blocking ``read(size)`` over an ASGI request body, for synchronous code in the pool:
    each read is done on the event loop; a client silent for ``silence_s`` is a 408."""

    def __init__(self, stream: Any, loop: asyncio.AbstractEventLoop, silence_s: float) -> None:
        self._stream = stream
        self._loop = loop
        self._silence_s = silence_s

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left if negative); b"" at the end."""
        chunks: list[bytes] = []
        wanted = size if size is not None and size >= 0 else None
        got = 0
        while wanted is None or got < wanted:
            step = _READ_SIZE if wanted is None else min(_READ_SIZE, wanted - got)
            future = asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(self._stream.read(step), self._silence_s), self._loop)
            try:
                chunk = future.result()
            except TimeoutError:
                raise GatewayError(408, "request_timeout", "The request body did not arrive "
                                   "in time", {"Connection": "close"}) from None
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


class PooledStream:
    """A synchronous response iterable (a sync handler's ``resp.stream``) iterated in the
    pool, one chunk per hop, and closed there (Falcon awaits ``close()`` at the end, also
    when the client went away)."""

    __slots__ = ("_gateway", "_iterator", "_source")

    def __init__(self, gateway: Gateway, source: Any) -> None:
        self._gateway = gateway
        self._source = source
        self._iterator = iter(source)

    def __aiter__(self) -> PooledStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._gateway.run_sync(next, self._iterator, None)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            await self._gateway.run_sync(close)


def _adapt_stream(gateway: Gateway, resp: falcon.asgi.Response) -> None:
    stream = resp.stream
    if stream is None or hasattr(stream, "__aiter__"):
        return
    read = getattr(stream, "read", None)
    if read is not None:
        if inspect.iscoroutinefunction(read):
            return
        stream = _FileChunks(stream)  # a blocking file-like object: read it in the pool
    elif isinstance(stream, (list, tuple)) and not stream:
        resp.stream = None
        return
    resp.stream = PooledStream(gateway, stream)


class _FileChunks:
    """Iterate a blocking file-like object in chunks; ``close()`` closes it."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def __iter__(self) -> Any:
        return iter(lambda: self.file.read(_READ_SIZE), b"")

    def close(self) -> None:
        close = getattr(self.file, "close", None)
        if close is not None:
            close()


def _route_responder(gateway: Gateway, responder: Callable[..., None], kind: str,
                     owner: str) -> Callable:
    max_body = gateway.max_body
    silence_s = gateway.config["FLOWORK_SERVER_IDLE_TIMEOUT_S"]

    def authenticate(req: Any, resp: Any) -> None:
        gateway.authenticate(req, kind)
        gateway.admit(req, resp, owner)

    def call(req: Any, resp: Any, params: dict[str, Any]) -> None:
        authenticate(req, resp)
        responder(req, resp, **params)

    async def on_request(req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: Any) -> None:
        if _has_body(req):
            try:
                await gateway.run_sync(authenticate, req, resp)
                await prefetch_body(req, max_body, silence_s)
            finally:
                _close_if_unread(req, resp)
            await gateway.run_sync(responder, req, resp, **params)
        else:
            req.context.prefetched_body = b""
            await gateway.run_sync(call, req, resp, params)
        _adapt_stream(gateway, resp)

    return on_request


def _async_route_responder(gateway: Gateway, responder: Callable[..., Any], kind: str,
                           owner: str) -> Callable:
    """A resource's own ``on_<method>_async``: authenticated and admitted in the pool (skipped
    for a public route when no plugin admits anything), the declared length checked, then
    awaited on the loop; it reads ``req.stream`` itself."""
    limit = gateway.request_body_limit

    def authenticate(req: Any, resp: Any) -> None:
        gateway.authenticate(req, kind)
        gateway.admit(req, resp, owner)

    async def on_request(req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: Any) -> None:
        if kind != "public" or gateway._admit is not None:
            await gateway.run_sync(authenticate, req, resp)
        length = req.content_length
        if length is not None and length > limit:
            raise body_too_large(limit)
        await responder(req, resp, **params)

    return on_request


class _AsyncResource:
    """One route's resource under ASGI: each ``on_<method>`` runs auth + responder in the pool,
    unless the resource also has an ``on_<method>_async`` coroutine (used instead, on the loop:
    for responders that wait on the network, such as the public proxies)."""

    def __init__(self, gateway: Gateway, route: Route, owner: str) -> None:
        for method in falcon.COMBINED_METHODS:
            name = f"on_{method.lower()}"
            responder = getattr(route.resource, name, None)
            if responder is None or method == "OPTIONS":
                continue
            kind = route.auth_for(method)
            native = getattr(route.resource, f"{name}_async", None)
            setattr(self, name, _async_route_responder(gateway, native, kind, owner) if native
                    else _route_responder(gateway, responder, kind, owner))


def _sink_responder(gateway: Gateway, sink: Sink, owner: str) -> Callable:
    handler = sink.handler
    async_handler = sink.async_handler
    base = sink.prefix.rstrip("/")
    silence_s = gateway.config["FLOWORK_SERVER_IDLE_TIMEOUT_S"]

    prepare = sink.prepare
    route = sink_route((API_PREFIX + sink.prefix).rstrip("/"))

    def authenticate(req: Any, resp: Any) -> None:
        gateway.enter_sink(req, resp, sink.auth, owner, route)

    def call(req: Any, resp: Any, path: str) -> None:
        authenticate(req, resp)
        handler(req, resp, path)

    def admit(req: Any, resp: Any, path: str, limit: int) -> None:
        """Authentication, admission, the declared length and the sink's own prepare: one
        pool hop."""
        authenticate(req, resp)
        length = req.content_length
        if length is not None and length > limit:
            raise body_too_large(limit)
        if prepare is not None:
            req.context.prepared = prepare(req, path)

    async def on_request(req: falcon.asgi.Request, resp: falcon.asgi.Response,
                         path: str | None = None) -> None:
        full = (base + (path or "")) or "/"
        limit = gateway.request_body_limit
        if async_handler is not None:
            try:
                await gateway.run_sync(admit, req, resp, full, limit)
                await async_handler(req, resp, full)
            finally:
                if _has_body(req):
                    _close_if_unread(req, resp)
            return
        if _has_body(req):
            try:
                await gateway.run_sync(authenticate, req, resp)
                length = req.content_length
                if length is not None and length > limit:
                    raise body_too_large(limit)
                # Read as the handler asks for it, from the loop: an upload streams through
                # in bounded memory, never held whole.
                req.context.body_stream = BlockingBody(req.stream, asyncio.get_running_loop(),
                                                       silence_s)
                await gateway.run_sync(handler, req, resp, full)
            finally:
                _close_if_unread(req, resp)
        else:
            req.context.prefetched_body = b""
            await gateway.run_sync(call, req, resp, full)
        _adapt_stream(gateway, resp)

    return on_request


class _KernelMiddleware:
    """Request id, CORS and preflights on the loop (no thread); lifespan for the gateway."""

    def __init__(self, gateway: Gateway, sync_middleware: Any) -> None:
        self.gateway = gateway
        self._process_request = sync_middleware.process_request
        self._started_here = False

    async def process_startup(self, scope: dict, event: dict) -> None:
        gateway = self.gateway
        gateway.loop = asyncio.get_running_loop()
        if not gateway.started:
            self._started_here = True
            await gateway.run_sync(gateway.start)

    async def process_shutdown(self, scope: dict, event: dict) -> None:
        # Only a gateway this lifespan started is closed by it (tests start their own, and
        # falcon.testing runs a lifespan around every simulated request). Not in the worker
        # pool: after the stop deadline its threads may still be stuck in plugin calls.
        if self._started_here:
            await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        with self.gateway.using_db():
            self.gateway.close()

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._process_request(req, resp)

    async def process_response(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                               resource: object, req_succeeded: bool) -> None:
        set_route(req)
        if getattr(req.context, "db_broken", False):
            self.gateway.health.mark_down()


_MIDDLEWARE_METHODS = ("process_request", "process_resource", "process_response")


def _pooled_middleware(gateway: Gateway, component: object) -> object:
    """A plugin's synchronous Falcon middleware, each method run in the pool."""
    methods: dict[str, Any] = {}
    for name in _MIDDLEWARE_METHODS:
        method = getattr(component, name, None)
        if method is None:
            continue

        def bind(method: Callable[..., None] = method) -> Callable:
            async def run(self: object, *args: Any) -> None:
                await gateway.run_sync(method, *args)
            return run

        methods[name] = bind()
    return type(f"Pooled{type(component).__name__}", (), methods)()


async def _database_down(req: Any, resp: Any, ex: Exception, params: Any, ws: Any = None) -> None:
    database_down(req, resp, ex, params)


async def _unexpected(req: Any, resp: Any, ex: Exception, params: Any, ws: Any = None) -> None:
    handle_unexpected(req, resp, ex, params)


def build_asgi_app(gateway: Gateway, sync_middleware: Any,
                   plugin_middleware: list[object]) -> Any:
    """The native Falcon ASGI app serving ``gateway``'s routes and sinks."""
    middleware: list[object] = [_KernelMiddleware(gateway, sync_middleware)]
    middleware += [_pooled_middleware(gateway, m) for m in plugin_middleware]
    app = falcon.asgi.App(middleware=middleware)
    install_error_handlers(app, _unexpected, _database_down)
    for plugin, route in gateway.routes:
        app.add_route(route.full_path, _AsyncResource(gateway, route, plugin))
    for plugin, sink in gateway.sinks:
        prefix = (API_PREFIX + sink.prefix).rstrip("/")
        app.add_sink(_sink_responder(gateway, sink, plugin), sink_pattern(prefix))
    return BodyDeferred(app)

