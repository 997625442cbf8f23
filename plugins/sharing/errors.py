"""Error codes the sharing plugin answers (beyond the kernel's generic ones)."""

# ruff: noqa: S105  (error codes, not secrets)

from __future__ import annotations

USER_NOT_FOUND = "user_not_found"  # 404: no user with that username or address
CANNOT_SHARE_WITH_SELF = "cannot_share_with_self"  # 400
INVALID_SHARE_TOKEN = "invalid_share_token"  # 404: share link unknown or expired
INVALID_PRESET_NAME = "invalid_preset_name"  # 400
