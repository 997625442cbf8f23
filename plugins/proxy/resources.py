"""The proxy's HTTP surface: the public proxy routes and the authenticated catch-all sink."""

from __future__ import annotations

from typing import Any

import falcon

from gateway_kernel import API_PREFIX, Gateway

from . import errors
from .cache import CachedResponse
from .forward import Forwarder, Outgoing

#: The header naming the engine a user's request goes to (its own, or one shared with it).
ENGINE_HEADER = "X-Flowork-Engine-ID"
#: Header values that mean "no engine named" (the lite GUI sends a placeholder).
NO_ENGINE = frozenset({"", "null", "local-engine-default"})
#: Paths the public engine serves to anyone (GET and HEAD).
PUBLIC_PATHS = ("/localization/{lang_code}", "/news", "/components/{type}/{id}/icon")


class PublicProxyResource:
    """GET/HEAD on a public path → the configured public engine; other methods are 405."""

    def __init__(self, gateway: Gateway, forwarder: Forwarder) -> None:
        self.gateway = gateway
        self.forwarder = forwarder

    def on_get(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        """The WSGI server's responder (GET and HEAD)."""
        out = self.forwarder.prepare_public(req, req.path[len(API_PREFIX):])
        if isinstance(out, CachedResponse):
            self.forwarder.send_cached(resp, out)
        else:
            self.forwarder.send_sync(req, resp, out)

    on_head = on_get

    async def on_get_async(self, req: Any, resp: Any, **params: str) -> None:
        """The ASGI server's responder (GET and HEAD): a cache hit is answered on the loop;
        otherwise the request hook (plugin code) runs in the kernel's pool, the exchange on
        the loop."""
        path = req.path[len(API_PREFIX):]
        hit = self.forwarder.cached(req, path)  # a hit costs no trip to the pool
        out = hit or await self.gateway.run_sync(self.forwarder.prepare_public, req, path)
        if isinstance(out, CachedResponse):
            self.forwarder.send_cached(resp, out)
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
            raise errors.engine_offline()
        # A credential exposed to one engine's owner is good for that engine only; a guest's
        # credential going to someone else's engine is exposed from now on (API.md, Proxy).
        self.gateway.check_audience(principal, target.engine_id)
        if not target.owned:
            self.gateway.hook.gateway_credential_exposed(
                gateway=self.gateway, principal=principal, audience=target.engine_id)
        return self.forwarder.prepare_user(req, path, principal, target)
