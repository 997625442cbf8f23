"""ratelimit: the plugin class and its hook implementations."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from gateway_kernel import GatewayPlugin, Principal, hookimpl

from .errors import RATE_LIMITED
from .limiter import Limiter
from .settings import SETTINGS, RateLimitConfig

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
        config = gateway.config
        cfg = RateLimitConfig(
            rules=config["FLOWORK_RATE_LIMITS"],
            redis_url=config["FLOWORK_REDIS_URL"] or None,
            key_prefix=config["FLOWORK_RATE_LIMIT_KEY_PREFIX"],
        )
        groups = {"kernel", "*", *gateway.plugins}
        unknown = sorted({r.group for r in cfg.rules} - groups)
        if unknown:
            from gateway_kernel import ConfigError

            raise ConfigError(f"FLOWORK_RATE_LIMITS: unknown route group(s) {unknown}; "
                              f"groups are plugin names ({', '.join(sorted(groups))})")
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
        return {429: [RATE_LIMITED]}

    @hookimpl
    def gateway_shutdown(self, gateway: Gateway) -> None:
        if self.limiter is not None:
            self.limiter.close()
