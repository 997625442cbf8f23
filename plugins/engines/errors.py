"""Error codes the engines plugin answers (beyond the kernel's generic ones)."""

# ruff: noqa: S105  (error codes, not secrets)

from __future__ import annotations

INVALID_ENGINE_TOKEN = "invalid_engine_token"  # 401: the engine behind a token is gone
INVALID_ENGINE_URL = "invalid_engine_url"  # 400: a heartbeat URL the address policy refuses
INVALID_KEY = "invalid_key"  # 400: a user-state key of the wrong form
INVALID_COMPONENT_ID = "invalid_component_id"  # 400: a kill-switch component id of the wrong form
AUTHORIZATION_PENDING = "authorization_pending"  # 404: claim not approved yet
EXPIRED_TOKEN = "expired_token"  # 404: claim expired or already claimed
ENGINE_OFFLINE = "engine_offline"  # 503: no online engine to resolve
