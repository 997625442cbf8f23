"""Error codes auth_internal answers (API.md lists them; the schemes' ``error_codes``)."""

# ruff: noqa: S105  (error codes, not secrets)

from __future__ import annotations

INVALID_ENGINE_TOKEN = "invalid_engine_token"  # 401: X-Engine-Token missing, malformed or unknown
INVALID_API_KEY = "invalid_api_key"  # 401: X-API-Key missing or wrong
SERVICE_AUTH_NOT_CONFIGURED = "service_auth_not_configured"  # 503: no GATEWAY_SECRET_TOKEN
