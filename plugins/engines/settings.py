"""Settings of the engines plugin, declared for the kernel and resolved once at configure."""

from __future__ import annotations

from dataclasses import dataclass

from gateway_kernel import ConfigError, Setting
from gateway_kernel.config import Config, as_int, as_mapping, as_networks, as_seconds

from .urls import Network, parse_static_urls

SETTINGS = (
    Setting("FLOWORK_ENGINE_ONLINE_S", as_seconds(1, 86400), 120.0,
            "heartbeat age (seconds) that still counts as online"),
    Setting("FLOWORK_CLAIM_TTL_S", as_seconds(10, 86400), 300.0,
            "lifetime (seconds) of an approved dashboard claim"),
    Setting("FLOWORK_ENGINE_NETWORKS", as_networks, (),
            "allowed networks (CIDRs) for engine-reported URLs; when set, only IP literals "
            "inside them are accepted (default: any but link-local and metadata)", allow_empty=False),
    Setting("FLOWORK_ENGINE_URLS", as_mapping, {},
            "static engine URLs, engine_id=url,engine_id=url (always routable)"),
    Setting("FLOWORK_LIMIT_ENGINES_PER_USER", as_int(1, 10**9), 100,
            "engines one user may own (409 limit_reached beyond)"),
)


@dataclass(frozen=True)
class EnginesConfig:
    online_s: float
    claim_ttl_s: float
    networks: tuple[Network, ...]
    static_urls: dict[str, str]
    max_engines: int = 100

    @property
    def interval_s(self) -> int:
        """Heartbeat interval told to engines: a quarter of the online window, so that two
        lost heartbeats in a row do not yet mark an engine offline."""
        return max(1, int(self.online_s // 4))

    @classmethod
    def from_config(cls, config: Config) -> EnginesConfig:
        try:
            static = parse_static_urls(config["FLOWORK_ENGINE_URLS"])
        except ValueError as exc:
            raise ConfigError(f"FLOWORK_ENGINE_URLS (setting of engines): {exc}") from None
        return cls(
            online_s=config["FLOWORK_ENGINE_ONLINE_S"],
            claim_ttl_s=config["FLOWORK_CLAIM_TTL_S"],
            networks=tuple(config["FLOWORK_ENGINE_NETWORKS"]),
            static_urls=static,
            max_engines=config["FLOWORK_LIMIT_ENGINES_PER_USER"],
        )
