"""Error codes the sharing plugin answers (beyond the kernel's generic ones), and the helpers
that build them (``raise errors.invalid_share_token()``)."""

# ruff: noqa: S105  (error codes, not secrets)

from __future__ import annotations

from gateway_kernel.errors import GatewayError, bad_request, not_found

USER_NOT_FOUND = "user_not_found"  # 404: no user with that username or address
CANNOT_SHARE_WITH_SELF = "cannot_share_with_self"  # 400
INVALID_SHARE_TOKEN = "invalid_share_token"  # 404: share link unknown or expired
INVALID_PRESET_NAME = "invalid_preset_name"  # 400


def user_not_found() -> GatewayError:
    return not_found("No user with that username or address", code=USER_NOT_FOUND)


def cannot_share_with_self() -> GatewayError:
    return bad_request("You cannot share an engine with yourself", code=CANNOT_SHARE_WITH_SELF)


def invalid_share_token() -> GatewayError:
    # Expired, deleted and unknown tokens alike: a caller learns nothing more.
    return not_found("Share link not found or expired", code=INVALID_SHARE_TOKEN)


def invalid_preset_name(max_length: int) -> GatewayError:
    return bad_request(f"Preset name must be 1-{max_length} characters, without control "
                       "characters or slashes", code=INVALID_PRESET_NAME)
