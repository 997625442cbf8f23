"""The sharing plugin: engine shares (with roles) and workflow share links."""

from __future__ import annotations

from typing import Any

from gateway_kernel import Gateway, GatewayPlugin, Route, Setting, hookimpl
from gateway_kernel.config import as_int, as_str
from gateway_plugins.engines.hookspecs import EngineGuest, EngineStatus

from . import engine_shares as es
from . import workflow_links as wl
from .models import MIGRATIONS, MODELS
from .openapi import openapi_part

DEFAULT_SHARE_BASE_URL = "https://flowork.cloud/shared"


def parse_base_url(value: Any) -> str:
    url = as_str(value).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return url


class SharingPlugin(GatewayPlugin):
    name = "sharing"
    version = "0.1.0"
    requires = ("engines",)
    description = "Engine shares and workflow share links"
    settings = (
        Setting("FLOWORK_SHARE_BASE_URL", parse_base_url, DEFAULT_SHARE_BASE_URL,
                "base of share_url in workflow share links"),
        Setting("FLOWORK_LIMIT_SHARES_PER_ENGINE", as_int(1, 10**9), 100,
                "users one engine may be shared with (409 limit_reached beyond)"),
        Setting("FLOWORK_LIMIT_LINKS_PER_WORKFLOW", as_int(1, 10**9), 100,
                "share links one workflow may have (409 limit_reached beyond)"),
    )

    def __init__(self) -> None:
        self.share_base_url = DEFAULT_SHARE_BASE_URL
        self.online_s = 0
        self.max_shares = 100
        self.max_links = 100

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        self.share_base_url = gateway.config["FLOWORK_SHARE_BASE_URL"]
        self.max_shares = gateway.config["FLOWORK_LIMIT_SHARES_PER_ENGINE"]
        self.max_links = gateway.config["FLOWORK_LIMIT_LINKS_PER_WORKFLOW"]
        # The engines plugin (required) declares the online window; read it, never redefine it.
        self.online_s = gateway.config["FLOWORK_ENGINE_ONLINE_S"]

    @hookimpl
    def gateway_models(self) -> list:
        return list(MODELS)

    @hookimpl
    def gateway_migrations(self) -> list:
        return list(MIGRATIONS)

    @hookimpl
    def gateway_routes(self, gateway: Gateway) -> list[Route]:
        return [
            Route("/engines/{engine_id}/shares",
                  es.EngineSharesResource(gateway, "share_with_identifier", self.max_shares), "user"),
            Route("/engines/{engine_id}/shares/{shared_user_id}", es.DeleteShareResource(gateway), "user"),
            Route("/user/shared-engines", es.SharedEnginesResource(self.online_s), "user"),
            # Compatibility aliases used by the current Flowork GUI (API.md).
            Route("/user/engines/{engine_id}/shares", es.ListSharesResource(), "user"),
            Route("/user/engines/{engine_id}/share",
                  es.CreateShareResource(gateway, "user_id", self.max_shares), "user"),
            Route("/user/engines/{engine_id}/shares/{shared_user_id}",
                  es.DeleteShareResource(gateway), "user"),
            Route("/user/engines/{engine_id}/shares/delete",
                  es.DeleteShareByBodyResource(gateway), "user"),
            # Workflow share links.
            Route("/workflows/{preset_name}/shares",
                  wl.WorkflowLinksResource(gateway, self.share_base_url, self.max_links), "user"),
            Route("/workflow-shares/{share_id}", wl.WorkflowLinkResource(), "user"),
            Route("/workflow-shares/resolve/{share_token}", wl.ResolveLinkResource(), "public"),
        ]

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        return openapi_part()

    # -- Flowork contract: guests for get-engine-auth-info and the proxy decision ----------

    @hookimpl
    def flowork_engine_guests(self, engine_id: str) -> list[EngineGuest]:
        return es.engine_guests(engine_id)

    @hookimpl
    def flowork_engine_guest_role(self, engine_id: str, account_id: int) -> str | None:
        return es.engine_guest_role(engine_id, account_id)

    @hookimpl
    def flowork_engines_shared_with(self, account_id: int) -> list[str]:
        return es.engines_shared_with(account_id)

    @hookimpl
    def flowork_engine_statuses(self, account_id: int) -> list[EngineStatus]:
        return es.shared_statuses(account_id, self.online_s)
