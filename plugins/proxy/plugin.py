"""The proxy plugin: the authenticated catch-all and the public proxies (API.md, "Proxy").

It decides nothing about engines itself: the target of a user's request comes from the
``flowork_resolve_engine`` hook (the engines plugin), and every forwarded request passes
through the ``flowork_proxy_request`` hook, where any plugin may add headers, log or refuse.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import falcon

from gateway_kernel import API_PREFIX, ConfigError, Gateway, GatewayPlugin, Route, Setting, Sink, hookimpl
from gateway_kernel.config import as_int, as_networks, as_optional_str, as_seconds
from gateway_kernel.errors import unavailable
from gateway_kernel.openapi import error, op, path_param

from .cache import CachedResponse
from .forward import Forwarder, Outgoing, ProxySettings, engine_base

log = logging.getLogger("gateway_plugins.proxy")

ENGINE_HEADER = "X-Flowork-Engine-ID"
#: Header values that mean "no engine named" (the lite GUI sends a placeholder).
NO_ENGINE = frozenset({"", "null", "local-engine-default"})
OFFLINE_RETRY_AFTER_S = 5
GIB = 1024**3
MIB = 1024**2


class ProxyPlugin(GatewayPlugin):
    name = "proxy"
    version = "0.1.0"
    description = "Public and authenticated reverse proxies to Core Engines"
    settings = (
        Setting("FLOWORK_PUBLIC_ENGINE_URL", as_optional_str, None,
                "the engine behind the public proxies (default: none, they answer 503)"),
        Setting("FLOWORK_TRUSTED_PROXIES", as_networks, (),
                "peers (CIDRs) whose Forwarded/X-Forwarded-* headers are kept"),
        Setting("FLOWORK_PROXY_MAX_UPLOAD_BYTES", as_int(0), GIB,
                "largest request body forwarded to an engine (serve admits bodies up to it)"),
        Setting("FLOWORK_PROXY_CONNECT_TIMEOUT_S", as_seconds(0.01, 300), 5.0,
                "connecting to an engine"),
        Setting("FLOWORK_PROXY_READ_TIMEOUT_S", as_seconds(0.01, 3600), 60.0,
                "longest silence while reading from or writing to an engine"),
        Setting("FLOWORK_PROXY_TIMEOUT_S", as_seconds(0.01, 3600), 120.0,
                "overall deadline for an engine's response headers (after the request body)"),
        Setting("FLOWORK_PROXY_MAX_DURATION_S", as_seconds(0.01, 86400), 3600.0,
                "cap on one whole proxied exchange, uploads and downloads included"),
        Setting("FLOWORK_PROXY_MAX_CONNECTIONS", as_int(1, 10000), 100,
                "connections to engines per process (all engines)"),
        Setting("FLOWORK_PROXY_BREAKER_FAILURES", as_int(1, 1000), 5,
                "consecutive failures that short-circuit an engine"),
        Setting("FLOWORK_PROXY_BREAKER_COOLDOWN_S", as_seconds(0.01, 3600), 30.0,
                "how long a failing engine is short-circuited"),
        Setting("FLOWORK_PROXY_MAX_PER_ENGINE", as_int(1, 100000), 32,
                "concurrent proxied requests per engine, per instance (beyond: 503 engine_busy)"),
        Setting("FLOWORK_PROXY_MAX_PER_USER", as_int(1, 100000), 64,
                "concurrent proxied requests per user, per instance (beyond: 503 engine_busy)"),
        Setting("FLOWORK_PROXY_CACHE_BYTES", as_int(0), 32 * MIB,
                "memory for cached public-proxy answers (0 disables the cache)"),
        Setting("FLOWORK_PROXY_CACHE_ENTRY_BYTES", as_int(1), 1 * MIB,
                "largest public-proxy answer that is cached"),
    )

    def __init__(self) -> None:
        self.forwarder: Forwarder | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        config = gateway.config
        public_url = config["FLOWORK_PUBLIC_ENGINE_URL"]
        if public_url is not None and engine_base(public_url) is None:
            raise ConfigError("FLOWORK_PUBLIC_ENGINE_URL: expected an http(s) URL without "
                              f"credentials, got {public_url!r}")
        # The server's own cap on request bodies must admit the largest upload we forward.
        gateway.allow_request_body(config["FLOWORK_PROXY_MAX_UPLOAD_BYTES"])
        self.forwarder = Forwarder(gateway, ProxySettings(
            connect_timeout_s=config["FLOWORK_PROXY_CONNECT_TIMEOUT_S"],
            read_timeout_s=config["FLOWORK_PROXY_READ_TIMEOUT_S"],
            timeout_s=config["FLOWORK_PROXY_TIMEOUT_S"],
            max_duration_s=config["FLOWORK_PROXY_MAX_DURATION_S"],
            max_upload_bytes=config["FLOWORK_PROXY_MAX_UPLOAD_BYTES"],
            max_connections=config["FLOWORK_PROXY_MAX_CONNECTIONS"],
            breaker_failures=config["FLOWORK_PROXY_BREAKER_FAILURES"],
            breaker_cooldown_s=config["FLOWORK_PROXY_BREAKER_COOLDOWN_S"],
            cache_bytes=config["FLOWORK_PROXY_CACHE_BYTES"],
            cache_entry_bytes=config["FLOWORK_PROXY_CACHE_ENTRY_BYTES"],
            trusted_proxies=tuple(config["FLOWORK_TRUSTED_PROXIES"]),
            public_engine_url=public_url,
            max_per_engine=config["FLOWORK_PROXY_MAX_PER_ENGINE"],
            max_per_user=config["FLOWORK_PROXY_MAX_PER_USER"],
        ))

    @hookimpl
    def gateway_shutdown(self, gateway: Gateway) -> None:
        if self.forwarder is None:
            return
        self.forwarder.close()
        # The async client's connections belong to the serving loop: close them there, when
        # it still runs (a stopped loop's transports go with it).
        loop = getattr(gateway, "loop", None)
        if self.forwarder._client is None or loop is None or not loop.is_running():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is loop:  # called on the loop itself (lifespan): close in the background
                loop.create_task(self.forwarder.aclose())
            else:
                asyncio.run_coroutine_threadsafe(self.forwarder.aclose(), loop).result(5)
        except Exception:  # shutdown must not raise
            log.warning("closing the engine connections failed", exc_info=True)

    # -- HTTP --------------------------------------------------------------------------------

    @hookimpl
    def gateway_routes(self, gateway: Gateway) -> list[Route]:
        assert self.forwarder is not None
        return [Route(path, PublicProxyResource(gateway, self.forwarder), "public") for path in PUBLIC_PATHS]

    @hookimpl
    def gateway_sinks(self, gateway: Gateway) -> list[Sink]:
        assert self.forwarder is not None
        proxy = UserProxy(gateway, self.forwarder)
        return [Sink("/", proxy, "user", async_handler=proxy.handle_async, prepare=proxy.prepare)]

    @hookimpl
    def gateway_cors_headers(self) -> list[str]:
        return [ENGINE_HEADER]

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        return openapi_part()


PUBLIC_PATHS = ("/localization/{lang_code}", "/news", "/components/{type}/{id}/icon")


class PublicProxyResource:
    """GET/HEAD on a public path → the configured public engine; other methods are 405."""

    def __init__(self, gateway: Gateway, forwarder: Forwarder) -> None:
        self.gateway = gateway
        self.forwarder = forwarder

    def on_get(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        self.forwarder.forward_public(req, resp, req.path[len(API_PREFIX):])

    on_head = on_get

    async def on_get_async(self, req: Any, resp: Any, **params: str) -> None:
        """The ASGI server's responder (GET and HEAD): a cache hit is answered on the loop;
        otherwise the request hook (plugin code) runs in the kernel's pool, the exchange on
        the loop."""
        path = req.path[len(API_PREFIX):]
        hit = self.forwarder.cached(req, path)  # a hit costs no trip to the pool
        out = hit or await self.gateway.run_sync(self.forwarder.prepare_public, req, path)
        if isinstance(out, CachedResponse):
            self.forwarder._send_cached(resp, out)
        else:
            await self.forwarder.send_async(req, resp, out)

    on_head_async = on_get_async


class UserProxy:
    """The catch-all sink: a signed-in user's request to their (or a shared) engine."""

    def __init__(self, gateway: Gateway, forwarder: Forwarder) -> None:
        self.gateway = gateway
        self.forwarder = forwarder

    def __call__(self, req: falcon.Request, resp: falcon.Response, path: str) -> None:
        """The WSGI server's handler (and the ASGI server's without async support)."""
        self.forwarder.send_sync(req, resp, self.prepare(req, path))

    async def handle_async(self, req: Any, resp: Any, path: str) -> None:
        """The ASGI server's handler: the engine lookup and the request hook (plugin code,
        maybe database queries) ran in the kernel's pool with authentication (``prepare``,
        one hop); the exchange runs on the loop."""
        await self.forwarder.send_async(req, resp, req.context.prepared)

    def prepare(self, req: Any, path: str) -> Outgoing:
        principal = req.context.principal
        engine_id = (req.get_header(ENGINE_HEADER) or "").strip()
        if principal.audience is not None:  # an exposed credential: its one engine, or nothing
            self.gateway.check_audience(principal, engine_id.lower())
        target = self.gateway.hook.flowork_resolve_engine(
            gateway=self.gateway, principal=principal,
            engine_id=None if engine_id in NO_ENGINE else engine_id,
        )
        if target is None or not target.url or not (target.online or target.static):
            raise unavailable("engine_offline", "No online engine to handle this request",
                              OFFLINE_RETRY_AFTER_S)
        # A credential exposed to one engine's owner is good for that engine only; a guest's
        # credential going to someone else's engine is exposed from now on (API.md, Proxy).
        self.gateway.check_audience(principal, target.engine_id)
        if not target.owned:
            self.gateway.hook.gateway_credential_exposed(
                gateway=self.gateway, principal=principal, audience=target.engine_id)
        return self.forwarder.prepare_user(req, path, principal, target)


def openapi_part() -> dict[str, Any]:
    """The public proxy routes (the authenticated catch-all has no fixed paths)."""
    answer = {
        "200": {"description": "The public engine's answer, passed through unchanged "
                               "(cached when its Cache-Control allows)"},
        "default": {"description": "Any other answer of the public engine, passed through"},
        "502": error("The public engine could not be reached", "engine_unreachable"),
        "503": error("No public engine configured, it failed repeatedly, or too many requests "
                     "are in flight to it (see Retry-After)",
                     "no_public_engine", "engine_unavailable", "engine_busy"),
        "508": error("The request already passed through this gateway (a proxy loop)",
                     "proxy_loop"),
        "504": error("The public engine did not answer in time", "engine_timeout"),
    }
    params = {
        "/localization/{lang_code}": [path_param("lang_code", "Language code, e.g. en")],
        "/news": [],
        "/components/{type}/{id}/icon": [path_param("type", "Component type"),
                                         path_param("id", "Component id")],
    }
    summaries = {
        "/localization/{lang_code}": "Localization strings (public engine)",
        "/news": "News feed (public engine)",
        "/components/{type}/{id}/icon": "Component icon (public engine)",
    }
    paths: dict[str, Any] = {}
    for path in PUBLIC_PATHS:
        # HEAD is served too (same answer without a body); like the kernel's health route it
        # is not listed separately.
        paths[path] = {"get": op(summaries[path], "public", answer, parameters=params[path],
                                 tags=["proxy"], errors={404: ["not_found"]})}
    # The authenticated catch-all has no fixed path to list; its own answers are described as
    # reusable responses (every other answer is the engine's, passed through).
    catch_all = "Authenticated proxy (any path under /api/v1 that no route owns): "
    responses = {
        "ProxyEngineOffline": error(catch_all + "no online engine for the caller, or the one "
                                    "named in X-Flowork-Engine-ID is offline; see Retry-After",
                                    "engine_offline"),
        "ProxyEngineNotFound": error(catch_all + "X-Flowork-Engine-ID names an engine the "
                                     "caller neither owns nor has shared, or the path has dot "
                                     "segments", "not_found"),
        "ProxyEngineUnreachable": error(catch_all + "the engine refused or broke the "
                                        "connection", "engine_unreachable"),
        "ProxyEngineTimeout": error(catch_all + "the engine did not answer in time",
                                    "engine_timeout"),
        "ProxyEngineUnavailable": error(catch_all + "the engine failed repeatedly and is "
                                        "short-circuited; see Retry-After", "engine_unavailable"),
        "ProxyEngineBusy": error(catch_all + "too many requests in flight to this engine or "
                                 "from this user (FLOWORK_PROXY_MAX_PER_ENGINE / _PER_USER); "
                                 "see Retry-After", "engine_busy"),
        "ProxyLoop": error(catch_all + "the request already passed through a Flowork gateway "
                           "(its Via header names one)", "proxy_loop"),
        "ProxyBodyTooLarge": error(catch_all + "the request body exceeds "
                                   "FLOWORK_PROXY_MAX_UPLOAD_BYTES", "body_too_large"),
    }
    return {"paths": paths, "components": {"responses": responses}}
