"""Error codes the killswitch plugin answers (beyond the kernel's generic ones), and the
helpers that build them."""

from __future__ import annotations

from gateway_kernel.errors import GatewayError, bad_request, not_found

INVALID_COMPONENT_ID = "invalid_component_id"  # 400: a component id of the wrong form


def invalid_component_id() -> GatewayError:
    return bad_request("component_id must be 1-128 characters: letters, digits, '_', '.', ':', '-'",
                       code=INVALID_COMPONENT_ID)


def invalid_reason(limit: int) -> GatewayError:
    return bad_request(f"'reason' must be a string of at most {limit} characters")


def not_disabled() -> GatewayError:
    return not_found("Component is not disabled")
