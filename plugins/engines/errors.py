"""Error codes the engines plugin answers (beyond the kernel's generic ones), and the helpers
that build them (``raise errors.expired_token()``)."""

# ruff: noqa: S105  (error codes, not secrets)

from __future__ import annotations

from gateway_kernel.errors import GatewayError, bad_request, not_found
from gateway_plugins.proxy import hookspecs as proxy_hookspecs

INVALID_ENGINE_TOKEN = "invalid_engine_token"  # 401: the engine behind a token is gone
INVALID_ENGINE_URL = "invalid_engine_url"  # 400: a heartbeat URL the address policy refuses
AUTHORIZATION_PENDING = "authorization_pending"  # 404: claim not approved yet
EXPIRED_TOKEN = "expired_token"  # 404: claim expired or already claimed
ENGINE_OFFLINE = proxy_hookspecs.ENGINE_OFFLINE


def invalid_engine_token() -> GatewayError:
    # The token authenticated a moment ago but its engine is gone (deleted or rotated).
    return GatewayError(401, INVALID_ENGINE_TOKEN, "Engine token is invalid")


def invalid_engine_url(reason: object) -> GatewayError:
    return bad_request(f"Engine URL refused: {reason}", code=INVALID_ENGINE_URL)


def authorization_pending() -> GatewayError:
    return not_found("The owner has not approved this request (yet)", code=AUTHORIZATION_PENDING)


def expired_token() -> GatewayError:
    return not_found("This request has expired or was already claimed", code=EXPIRED_TOKEN)


#: 503 when no online engine resolves: the proxy's contract defines the answer.
engine_offline = proxy_hookspecs.engine_offline
