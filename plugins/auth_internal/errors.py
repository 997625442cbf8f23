"""Error codes auth_internal answers (API.md lists them; the schemes' ``error_codes``), and the
helpers that raise them: no other module of the plugin spells a code."""

# ruff: noqa: S105  (error codes, not secrets)

from __future__ import annotations

from gateway_kernel.errors import GatewayError, unauthorized, unavailable

INVALID_ENGINE_TOKEN = "invalid_engine_token"  # 401: X-Engine-Token missing, malformed or unknown
INVALID_API_KEY = "invalid_api_key"  # 401: X-API-Key missing or wrong
SERVICE_AUTH_NOT_CONFIGURED = "service_auth_not_configured"  # 503: no GATEWAY_SECRET_TOKEN


def invalid_engine_token(message: str) -> GatewayError:
    """401 ``invalid_engine_token``: the engine token is missing or names no engine."""
    return unauthorized(message, code=INVALID_ENGINE_TOKEN)


def invalid_api_key(message: str) -> GatewayError:
    """401 ``invalid_api_key``: the service key is missing or wrong."""
    return unauthorized(message, code=INVALID_API_KEY)


def service_auth_not_configured() -> GatewayError:
    """503 ``service_auth_not_configured``: no service secret is set, so service routes are
    closed (never open)."""
    return unavailable("Service authentication is not configured (GATEWAY_SECRET_TOKEN)",
                       code=SERVICE_AUTH_NOT_CONFIGURED)
