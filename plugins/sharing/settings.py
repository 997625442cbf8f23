"""Settings of the sharing plugin, declared for the kernel and resolved once at configure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway_kernel import Setting
from gateway_kernel.config import Config, as_int, as_str

DEFAULT_SHARE_BASE_URL = "https://flowork.cloud/shared"


def parse_base_url(value: Any) -> str:
    url = as_str(value).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return url


SETTINGS = (
    Setting("FLOWORK_SHARE_BASE_URL", parse_base_url, DEFAULT_SHARE_BASE_URL,
            "base of share_url in workflow share links"),
    Setting("FLOWORK_LIMIT_SHARES_PER_ENGINE", as_int(1, 10**9), 100,
            "users one engine may be shared with (409 limit_reached beyond)"),
    Setting("FLOWORK_LIMIT_LINKS_PER_WORKFLOW", as_int(1, 10**9), 100,
            "share links one workflow may have (409 limit_reached beyond)"),
)


@dataclass(frozen=True)
class SharingConfig:
    share_base_url: str = DEFAULT_SHARE_BASE_URL
    max_shares: int = 100
    max_links: int = 100

    @classmethod
    def from_config(cls, config: Config) -> SharingConfig:
        return cls(
            share_base_url=config["FLOWORK_SHARE_BASE_URL"],
            max_shares=config["FLOWORK_LIMIT_SHARES_PER_ENGINE"],
            max_links=config["FLOWORK_LIMIT_LINKS_PER_WORKFLOW"],
        )
