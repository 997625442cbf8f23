"""Error codes the user_state plugin answers (beyond the kernel's generic ones), and the
helpers that build them."""

from __future__ import annotations

from gateway_kernel.errors import GatewayError, bad_request, limit_reached

INVALID_KEY = "invalid_key"  # 400: a key of the wrong form


def invalid_key() -> GatewayError:
    return bad_request("key must be 1-64 characters of a-z, 0-9 and '_'", code=INVALID_KEY)


def too_many_keys(limit: int) -> GatewayError:
    return limit_reached("state keys per user", limit, "FLOWORK_LIMIT_STATE_KEYS_PER_USER")
