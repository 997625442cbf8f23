"""Engine base URLs: those engines report (heartbeat) and static ones (FLOWORK_ENGINE_URLS).

The rules live in one place, :mod:`gateway_kernel.netpolicy` (shared with realtime URL
registration and the proxy's connect-time guard); this module only adapts them to the
engines plugin.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from gateway_kernel.netpolicy import AddressPolicy, Network, URLRefused, split_url

__all__ = ["InvalidEngineURL", "Network", "parse_static_urls", "validate_engine_url"]

#: The name this plugin has always used for a refused URL.
InvalidEngineURL = URLRefused


def validate_engine_url(url: str, networks: Iterable[Network] = ()) -> str:
    """The URL to store for an engine-reported ``url`` under a policy with only the allow-list
    ``networks``; :class:`InvalidEngineURL` if refused. (The heartbeat uses the gateway's
    shared policy, which also knows the gateway's own addresses.)"""
    return AddressPolicy(tuple(networks)).check_url(url)


def parse_static_urls(mapping: Mapping[str, str]) -> dict[str, str]:
    """``FLOWORK_ENGINE_URLS`` checked: canonical engine UUID → URL (operator-trusted, so only
    syntax is checked, not the address rules). Raises ValueError naming the bad entry."""
    result: dict[str, str] = {}
    for key, url in mapping.items():
        try:
            engine_id = str(uuid.UUID(key))
        except ValueError:
            raise ValueError(f"{key!r} is not an engine id (UUID)") from None
        try:
            result[engine_id] = split_url(url)[0]
        except URLRefused as exc:
            raise ValueError(f"URL for engine {engine_id}: {exc}") from None
    return result
