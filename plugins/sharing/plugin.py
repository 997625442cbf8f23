"""The sharing plugin: engine shares (with roles) and workflow share links.

It requires engines and uses only engines' public API (:mod:`gateway_plugins.engines.api`):
the ``Engine`` model for its foreign key and joins, and engines' online rule (``presence``)
for the engines it lists, so that both plugins show an engine's status alike.
"""

from __future__ import annotations

from typing import Any

from gateway_kernel import Gateway, GatewayPlugin, Route, hookimpl
from gateway_plugins.engines.api import EngineGuest, EngineStatus, Presence, presence

from . import queries
from .models import MIGRATIONS, MODELS
from .resources import engine_shares as es
from .resources import workflow_links as wl
from .settings import SETTINGS, SharingConfig
from .spec import openapi_part


class SharingPlugin(GatewayPlugin):
    name = "sharing"
    version = "0.1.0"
    requires = ("engines",)
    settings = SETTINGS
    description = "Engine shares and workflow share links"
    presence: Presence  # engines' online rule (engines.api), taken at configure

    def __init__(self) -> None:
        self.cfg = SharingConfig()

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        self.cfg = SharingConfig.from_config(gateway.config)
        self.presence = presence(gateway)

    @hookimpl
    def gateway_models(self) -> list[Any]:
        return list(MODELS)

    @hookimpl
    def gateway_migrations(self) -> list[Any]:
        return list(MIGRATIONS)

    @hookimpl
    def gateway_routes(self, gateway: Gateway) -> list[Route]:
        max_shares = self.cfg.max_shares
        return [
            Route("/engines/{engine_id}/shares",
                  es.EngineSharesResource(gateway, "share_with_identifier", max_shares), "user"),
            Route("/engines/{engine_id}/shares/{shared_user_id}", es.DeleteShareResource(gateway), "user"),
            Route("/user/shared-engines", es.SharedEnginesResource(self.presence), "user"),
            # Compatibility aliases used by the current Flowork GUI (API.md).
            Route("/user/engines/{engine_id}/shares", es.ListSharesResource(), "user"),
            Route("/user/engines/{engine_id}/share",
                  es.CreateShareResource(gateway, "user_id", max_shares), "user"),
            Route("/user/engines/{engine_id}/shares/{shared_user_id}",
                  es.DeleteShareResource(gateway), "user"),
            Route("/user/engines/{engine_id}/shares/delete",
                  es.DeleteShareByBodyResource(gateway), "user"),
            # Workflow share links.
            Route("/workflows/{preset_name}/shares",
                  wl.WorkflowLinksResource(gateway, self.cfg.share_base_url, self.cfg.max_links),
                  "user"),
            Route("/workflow-shares/{share_id}", wl.WorkflowLinkResource(), "user"),
            Route("/workflow-shares/resolve/{share_token}", wl.ResolveLinkResource(), "public"),
        ]

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        return openapi_part()

    # -- engines' contract: guests for get-engine-auth-info and the proxy decision ---------

    @hookimpl
    def flowork_engine_guests(self, engine_id: str) -> list[EngineGuest]:
        return queries.engine_guests(engine_id)

    @hookimpl
    def flowork_engine_guest_role(self, engine_id: str, account_id: int) -> str | None:
        return queries.engine_guest_role(engine_id, account_id)

    @hookimpl
    def flowork_engines_shared_with(self, account_id: int) -> list[str]:
        return queries.engines_shared_with(account_id)

    @hookimpl
    def flowork_engine_statuses(self, account_id: int) -> list[EngineStatus]:
        return queries.shared_statuses(account_id, self.presence)
