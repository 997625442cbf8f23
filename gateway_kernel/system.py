"""The kernel's own plugin: ``/system/health``, ``/openapi.json`` and ``/metrics``.

An ordinary :class:`~gateway_kernel.api.GatewayPlugin` built from public parts only, which the
kernel registers first in every gateway (also with ``FLOWORK_PLUGINS=none``). It is filed under
the name ``kernel``, as are the kernel's own tables (accounts, migration history), migrations
and settings: rate-limit rules and ``gateway_admit`` see its routes in the group ``kernel``;
``flowork-gateway plugins --all`` lists it with those tables and settings.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import falcon

from . import hookspecs as kernel_hookspecs
from .api import KERNEL, GatewayPlugin, Route, hookimpl
from .observe import METRICS_CONTENT_TYPE
from .openapi import build_document, json_response, op
from .settings import KERNEL_SETTINGS, SERVER_SETTINGS

if TYPE_CHECKING:
    from .app import Gateway


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flowork-gateway")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "0"


class HealthResource:
    """GET/HEAD /system/health: is the database answering? (``gateway.health``: a healthy
    answer is reused briefly, a database error anywhere ends that.)

    Under the ASGI server the ``_async`` responders answer on the event loop; only the
    ``SELECT 1`` runs on a thread (of its own: health answers also while every worker is busy).
    """

    HEALTHY = b'{"status":"healthy","database":"connected"}'
    UNHEALTHY = b'{"status":"unhealthy","database":"disconnected"}'

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.health = gateway.health

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        if self.health.fresh():
            resp.data = self.HEALTHY
            return
        try:
            self.health.probe()
        except self.health.ERRORS:
            req.context.db_broken = True  # the middleware marks the health down
            resp.status = falcon.HTTP_503
            resp.data = self.UNHEALTHY
            return
        resp.data = self.HEALTHY

    on_head = on_get

    async def on_get_async(self, req: Any, resp: Any) -> None:
        resp.content_type = falcon.MEDIA_JSON
        if self.health.fresh():
            resp.data = self.HEALTHY
            return
        try:
            await self.gateway.probe_database()
        except self.health.ERRORS:
            self.health.mark_down()
            resp.status = falcon.HTTP_503
            resp.data = self.UNHEALTHY
            return
        resp.data = self.HEALTHY

    on_head_async = on_get_async


class OpenAPIResource:
    """GET /openapi.json: the document merged from the enabled plugins (built once)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._body: bytes | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._body is None:
            self._body = json.dumps(build_document(self.gateway)).encode()
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


class MetricsResource:
    """GET /metrics: Prometheus text format (service principal)."""

    def __init__(self, gateway: Gateway) -> None:
        self.metrics = gateway.metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = METRICS_CONTENT_TYPE
        resp.data = self.metrics.render()


_HEALTH_BODY = {"type": "object", "required": ["status", "database"]}


class SystemPlugin(GatewayPlugin):
    name = KERNEL
    version = _version()
    description = ("always enabled: health, the OpenAPI document, metrics; the account and "
                   "migration tables; the kernel's settings")
    #: The kernel's own hooks: listed as what this plugin declares.
    hookspecs: ClassVar[ModuleType | None] = kernel_hookspecs
    #: The kernel's settings: declared by ``create_gateway`` before any plugin loads (they
    #: say which plugins load), under the owner ``kernel``.
    settings = KERNEL_SETTINGS + SERVER_SETTINGS

    @hookimpl
    def gateway_routes(self, gateway: Gateway) -> list[Route]:
        routes = [Route("/system/health", HealthResource(gateway), "public"),
                  Route("/openapi.json", OpenAPIResource(gateway), "public")]
        if "service" in gateway.schemes:  # else only FLOWORK_METRICS_ADDRESS serves them
            routes.append(Route("/metrics", MetricsResource(gateway), "service", prefixed=False))
        return routes

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        paths: dict[str, Any] = {
            "/system/health": {
                "get": op("Database health", "public", {
                    200: json_response({**_HEALTH_BODY, "properties": {
                        "status": {"const": "healthy"}, "database": {"const": "connected"}}}),
                    503: json_response({**_HEALTH_BODY, "properties": {
                        "status": {"const": "unhealthy"}, "database": {"const": "disconnected"}}},
                        "Database unreachable"),
                }, tags=["system"]),
            },
            "/openapi.json": {
                "get": op("This document", "public",
                          {200: json_response({"type": "object"})}, tags=["system"]),
            },
        }
        if "service" in gateway.schemes:
            paths["/metrics"] = {
                "servers": [{"url": "/"}],  # not under the API prefix: where Prometheus looks
                "get": op("Prometheus metrics (text format 0.0.4)", "service", {
                    200: {"description": "Metrics", "content": {"text/plain": {
                        "schema": {"type": "string"}}}},
                }, tags=["system"]),
            }
        return {"paths": paths}
