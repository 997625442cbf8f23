"""Settings of the proxy plugin, resolved once at configure into :class:`ProxySettings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway_kernel import ConfigError, Setting
from gateway_kernel.config import Config, as_int, as_networks, as_optional_str, as_seconds

from .urls import engine_base

GIB = 1024**3
MIB = 1024**2

SETTINGS = (
    Setting("FLOWORK_PUBLIC_ENGINE_URL", as_optional_str, None,
            "the engine behind the public proxies (default: none, they answer 503)"),
    Setting("FLOWORK_TRUSTED_PROXIES", as_networks, (),
            "peers (CIDRs) whose Forwarded/X-Forwarded-* headers are kept"),
    Setting("FLOWORK_PROXY_MAX_UPLOAD_BYTES", as_int(0), GIB,
            "largest request body forwarded to an engine (serve admits bodies up to it)"),
    Setting("FLOWORK_PROXY_CONNECT_TIMEOUT_S", as_seconds(0.01, 300), 5.0,
            "connecting to an engine"),
    Setting("FLOWORK_PROXY_READ_TIMEOUT_S", as_seconds(0.01, 3600), 60.0,
            "longest silence while reading from or writing to an engine"),
    Setting("FLOWORK_PROXY_TIMEOUT_S", as_seconds(0.01, 3600), 120.0,
            "overall deadline for an engine's response headers (after the request body)"),
    Setting("FLOWORK_PROXY_MAX_DURATION_S", as_seconds(0.01, 86400), 3600.0,
            "cap on one whole proxied exchange, uploads and downloads included"),
    Setting("FLOWORK_PROXY_MAX_CONNECTIONS", as_int(1, 10000), 100,
            "connections to engines per process (all engines)"),
    Setting("FLOWORK_PROXY_BREAKER_FAILURES", as_int(1, 1000), 5,
            "consecutive failures that short-circuit an engine"),
    Setting("FLOWORK_PROXY_BREAKER_COOLDOWN_S", as_seconds(0.01, 3600), 30.0,
            "how long a failing engine is short-circuited"),
    Setting("FLOWORK_PROXY_MAX_PER_ENGINE", as_int(1, 100000), 32,
            "concurrent proxied requests per engine, per instance (beyond: 503 engine_busy)"),
    Setting("FLOWORK_PROXY_MAX_PER_USER", as_int(1, 100000), 64,
            "concurrent proxied requests per user, per instance (beyond: 503 engine_busy)"),
    Setting("FLOWORK_PROXY_CACHE_BYTES", as_int(0), 32 * MIB,
            "memory for cached public-proxy answers (0 disables the cache)"),
    Setting("FLOWORK_PROXY_CACHE_ENTRY_BYTES", as_int(1), 1 * MIB,
            "largest public-proxy answer that is cached"),
)


@dataclass(frozen=True)
class ProxySettings:
    connect_timeout_s: float
    read_timeout_s: float
    timeout_s: float
    max_duration_s: float
    max_upload_bytes: int
    max_connections: int
    breaker_failures: int
    breaker_cooldown_s: float
    cache_bytes: int
    cache_entry_bytes: int
    trusted_proxies: tuple[Any, ...]
    public_engine_url: str | None
    max_per_engine: int = 32
    max_per_user: int = 64

    @classmethod
    def from_config(cls, config: Config) -> ProxySettings:
        public_url = config["FLOWORK_PUBLIC_ENGINE_URL"]
        if public_url is not None and engine_base(public_url) is None:
            raise ConfigError("FLOWORK_PUBLIC_ENGINE_URL: expected an http(s) URL without "
                              f"credentials, got {public_url!r}")
        return cls(
            connect_timeout_s=config["FLOWORK_PROXY_CONNECT_TIMEOUT_S"],
            read_timeout_s=config["FLOWORK_PROXY_READ_TIMEOUT_S"],
            timeout_s=config["FLOWORK_PROXY_TIMEOUT_S"],
            max_duration_s=config["FLOWORK_PROXY_MAX_DURATION_S"],
            max_upload_bytes=config["FLOWORK_PROXY_MAX_UPLOAD_BYTES"],
            max_connections=config["FLOWORK_PROXY_MAX_CONNECTIONS"],
            breaker_failures=config["FLOWORK_PROXY_BREAKER_FAILURES"],
            breaker_cooldown_s=config["FLOWORK_PROXY_BREAKER_COOLDOWN_S"],
            cache_bytes=config["FLOWORK_PROXY_CACHE_BYTES"],
            cache_entry_bytes=config["FLOWORK_PROXY_CACHE_ENTRY_BYTES"],
            trusted_proxies=tuple(config["FLOWORK_TRUSTED_PROXIES"]),
            public_engine_url=public_url,
            max_per_engine=config["FLOWORK_PROXY_MAX_PER_ENGINE"],
            max_per_user=config["FLOWORK_PROXY_MAX_PER_USER"],
        )
