"""auth_internal: ``engine`` principals (X-Engine-Token) and ``service`` principals (X-API-Key).

The schemes are in :mod:`.schemes`, the settings in :mod:`.settings`, the error codes in
:mod:`.errors`, the hook it asks of whoever issues engine tokens in :mod:`.hookspecs`. It adds
no routes and no OpenAPI part of its own: its security schemes come from the schemes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway_kernel import AuthScheme, GatewayPlugin, hookimpl

from .schemes import EngineTokenScheme, ServiceKeyScheme
from .settings import SETTINGS, AuthInternalConfig

if TYPE_CHECKING:
    from gateway_kernel import Gateway


class AuthInternalPlugin(GatewayPlugin):
    name = "auth_internal"
    version = "0.1.0"
    description = "Engine principals (X-Engine-Token) and service principals (X-API-Key)"
    settings = SETTINGS

    engine_scheme: EngineTokenScheme
    service_scheme: ServiceKeyScheme

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        cfg = AuthInternalConfig.from_config(gateway.config)
        self.engine_scheme = EngineTokenScheme(gateway)
        self.service_scheme = ServiceKeyScheme(cfg.service_secret)

    @hookimpl
    def gateway_auth_schemes(self, gateway: Gateway) -> list[AuthScheme]:
        return [self.engine_scheme, self.service_scheme]
