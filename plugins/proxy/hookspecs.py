"""Hooks the proxy calls: where a user's request goes, and a last look before it leaves.

The proxy decides nothing about engines: :func:`flowork_resolve_engine` (the engines plugin
answers it) names the target, and :func:`flowork_proxy_request` lets any plugin add headers,
log or refuse each forwarded request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pluggy

from gateway_kernel.api import PROJECT
from gateway_kernel.errors import GatewayError

if TYPE_CHECKING:
    from gateway_kernel.api import Principal
    from gateway_kernel.app import Gateway

hookspec = pluggy.HookspecMarker(PROJECT)

#: 503: no online engine for the caller. A resolver with no engine to name raises
#: :func:`engine_offline`, so the proxy and the resolver answer it the same way.
ENGINE_OFFLINE = "engine_offline"


def engine_offline(retry_after_s: int) -> GatewayError:
    """The one ``engine_offline`` answer: 503, retry after ``retry_after_s`` seconds."""
    return GatewayError(503, ENGINE_OFFLINE, "No online engine is available",
                        {"Retry-After": str(retry_after_s)})


class EngineTarget(NamedTuple):
    """Where a proxied request goes: the engine and its base URL (``None`` when offline)."""

    engine_id: str
    url: str | None
    online: bool
    #: True when the URL came from operator configuration (trusted), not a heartbeat.
    static: bool = False
    #: True when the principal owns the engine. False (a guest's request) means the caller's
    #: credential is exposed to the engine's owner (``gateway_credential_exposed``).
    owned: bool = False


@hookspec(firstresult=True)
def flowork_resolve_engine(
    gateway: Gateway, principal: Principal, engine_id: str | None
) -> EngineTarget | None:
    """*firstresult*. The engine a user principal's proxied request goes to: ``engine_id`` if
    given (owned or shared, else raise 404), else the principal's own most recently seen online
    engine (never a shared one: a guest's signature must not go to another owner unasked).
    Raise ``GatewayError`` 404/503 as API.md says; None means no resolver answered."""


@hookspec
def flowork_proxy_request(
    gateway: Gateway,
    principal: Principal | None,
    target: EngineTarget,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """Called for each request the proxy is about to forward. ``headers`` (lowercase names)
    may be changed in place; raise ``GatewayError`` to refuse the request."""
