"""The engines plugin: engines and tokens, heartbeats and presence, the dashboard claim flow.

It answers two hooks other plugins declare: ``flowork_engine_by_token`` (the
engine-token scheme of auth_internal, ``auth_internal.hookspecs``) and ``flowork_resolve_engine``
(the proxy, ``proxy.hookspecs``), and declares in its own ``hookspecs`` the ones it asks of
whoever shares engines (``flowork_engine_guests`` / ``flowork_engine_guest_role`` /
``flowork_engines_shared_with``), without knowing who that is. Plugins that require engines
import only its public API, :mod:`gateway_plugins.engines.api`.
"""

from __future__ import annotations

from typing import Any

from gateway_kernel import Gateway, GatewayPlugin, Principal, Route, hookimpl, netpolicy
from gateway_plugins.auth_internal.hookspecs import EngineIdentity
from gateway_plugins.proxy.hookspecs import EngineTarget

from . import presence, queries, tokens
from .hookspecs import EngineStatus
from .models import MIGRATIONS, MODELS
from .presence import Presence
from .resolve import resolve_engine
from .resources.claims import ClaimToken, SelectForAuth
from .resources.engine import EngineAuthInfo, Heartbeat
from .resources.owner import EngineItem, EnginesCollection, ResetToken, UpdateName
from .settings import SETTINGS, EnginesConfig
from .spec import openapi_part


class EnginesPlugin(GatewayPlugin):
    name = "engines"
    version = "0.1.0"
    # Its engine routes authenticate through auth_internal's engine-token scheme, which asks
    # this plugin through auth_internal's flowork_engine_by_token hook (and its service routes
    # through auth_internal's X-API-Key scheme).
    requires = ("auth_internal",)
    settings = SETTINGS
    description = "Engines and tokens, heartbeats and presence, the dashboard claim flow"

    def __init__(self) -> None:
        self.cfg: EnginesConfig | None = None
        self.policy: netpolicy.AddressPolicy | None = None
        #: The online rule other plugins use (api.presence); its window is set at configure.
        self.presence = Presence()

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        self.cfg = EnginesConfig.from_config(gateway.config)
        self.presence.online_s = self.cfg.online_s
        # The one address policy (heartbeat, realtime registration, proxy guard) takes the
        # operator's allow-list from this plugin's setting.
        self.policy = netpolicy.for_gateway(gateway)
        self.policy.allowed_networks = self.cfg.networks

    @hookimpl
    def gateway_models(self) -> list[Any]:
        return list(MODELS)

    @hookimpl
    def gateway_migrations(self) -> list[Any]:
        return list(MIGRATIONS)

    @hookimpl
    def gateway_routes(self, gateway: Gateway) -> list[Route]:
        cfg = self._config()
        return [
            Route("/user/engines", EnginesCollection(gateway, cfg), "user"),
            Route("/user/engines/select-for-auth", SelectForAuth(gateway, cfg), "user"),
            Route("/user/engines/{engine_id}", EngineItem(gateway, cfg), "user"),
            Route("/user/engines/{engine_id}/reset-token", ResetToken(gateway, cfg), "user"),
            Route("/user/engines/{engine_id}/update-name", UpdateName(gateway, cfg), "user"),
            Route("/engine/get-engine-auth-info", EngineAuthInfo(gateway), "engine"),
            Route("/engine/heartbeat", Heartbeat(gateway, cfg), "engine"),
            Route("/engine/claim-token", ClaimToken(gateway, cfg), "service"),
        ]

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        return openapi_part()

    @hookimpl
    def flowork_engine_by_token(self, token: str) -> EngineIdentity | None:
        # Format and CRC checksum first: a malformed or made-up token never reaches the database.
        if not tokens.is_well_formed(token):
            return None
        # One query on the unique index of token_digest: O(1) in the number of engines.
        row = queries.engine_by_digest(tokens.token_digest(token))
        return EngineIdentity(row[0], row[1]) if row else None

    @hookimpl(optionalhook=True)  # the proxy declares it; it may be disabled
    def flowork_resolve_engine(
        self, gateway: Gateway, principal: Principal, engine_id: str | None
    ) -> EngineTarget | None:
        if principal is None or principal.account is None:
            return None  # only user principals have engines to reach
        return resolve_engine(self._config(), gateway.hook, principal.account.id, engine_id)

    # -- realtime presence (the realtime plugin holds the sockets, this plugin the rows) ----

    @hookimpl
    def flowork_engine_statuses(self, account_id: int) -> list[EngineStatus]:
        return presence.owned_statuses(account_id, self._config().online_s)

    @hookimpl
    def flowork_engine_status(self, engine_id: str) -> EngineStatus | None:
        return presence.engine_status(engine_id, self._config().online_s)

    @hookimpl
    def flowork_engine_socket_lease(self, engine_ids: list[str], holder: str, until: Any,
                                    take_over: bool) -> list[str]:
        return presence.socket_lease(engine_ids, holder, until, take_over)

    @hookimpl
    def flowork_engine_socket_release(self, engine_id: str, holder: str, url: str | None) -> bool:
        return presence.socket_release(engine_id, holder, url)

    @hookimpl
    def flowork_engine_lapsed_leases(self) -> list[str]:
        return presence.lapsed_leases()

    @hookimpl
    def flowork_engine_register_url(self, engine_id: str, url: str) -> str:
        assert self.policy is not None
        return presence.register_url(engine_id, url, self.policy)

    def _config(self) -> EnginesConfig:
        if self.cfg is None:
            raise RuntimeError("engines plugin used before gateway_configure")
        return self.cfg
