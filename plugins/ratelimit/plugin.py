"""ratelimit: the plugin class and its hook implementations."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from gateway_kernel import GatewayPlugin, Principal, hookimpl

from .limiter import Limiter
from .settings import SETTINGS, RateLimitConfig
from .spec import common_errors

if TYPE_CHECKING:
    from gateway_kernel import Gateway


class RateLimitPlugin(GatewayPlugin):
    name = "ratelimit"
    version = "0.1.0"
    description = "Request limits per principal and per client address (memory or Redis)"
    settings = SETTINGS

    limiter: Limiter | None = None

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        cfg = RateLimitConfig.from_config(gateway.config, {"kernel", "*", *gateway.plugins})
        self.limiter = Limiter(cfg) if cfg.rules else None
        # No rules: the kernel skips gateway_admit altogether (no per-request call).
        self.admits_nothing = self.limiter is None

    @hookimpl
    def gateway_admit(self, gateway: Gateway, req: falcon.Request, resp: falcon.Response,
                      principal: Principal | None, group: str) -> None:
        if self.limiter is not None:
            self.limiter.admit(req, resp, principal, group, gateway.client_address)

    @hookimpl
    def gateway_openapi_common_errors(self, gateway: Gateway) -> dict[int, list[str]]:
        return common_errors()

    @hookimpl
    def gateway_shutdown(self, gateway: Gateway) -> None:
        if self.limiter is not None:
            self.limiter.close()
