"""The proxy plugin: the authenticated catch-all and the public proxies (API.md, "Proxy").

It decides nothing about engines itself: the target of a user's request comes from the
``flowork_resolve_engine`` hook (the engines plugin), and every forwarded request passes
through the ``flowork_proxy_request`` hook, where any plugin may add headers, log or refuse.
The folder: ``settings.py``, ``resources.py`` (routes and sink), ``spec.py`` (OpenAPI),
``errors.py`` (codes), ``hookspecs.py`` (the hooks above); the exchange itself is
``forward.py`` (deciding) with ``sync_path.py`` / ``async_path.py`` (the I/O per server).
"""

from __future__ import annotations

from typing import Any

from gateway_kernel import Gateway, GatewayPlugin, Route, Sink, hookimpl

from .forward import Forwarder
from .resources import ENGINE_HEADER, PUBLIC_PATHS, PublicProxyResource, UserProxy
from .settings import SETTINGS, ProxySettings
from .spec import openapi_part


class ProxyPlugin(GatewayPlugin):
    name = "proxy"
    version = "0.1.0"
    description = "Public and authenticated reverse proxies to Core Engines"
    settings = SETTINGS

    def __init__(self) -> None:
        self.forwarder: Forwarder | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        settings = ProxySettings.from_config(gateway.config)
        # The server's own cap on request bodies must admit the largest upload we forward.
        gateway.allow_request_body(settings.max_upload_bytes)
        self.forwarder = Forwarder(gateway, settings)

    @hookimpl
    def gateway_shutdown(self, gateway: Gateway) -> None:
        if self.forwarder is not None:
            self.forwarder.shutdown(getattr(gateway, "loop", None))

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
