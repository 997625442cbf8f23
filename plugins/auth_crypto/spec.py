"""auth_crypto's part of the OpenAPI document: the /auth/* operations and their schemas.

The user scheme's security schemes and 401 codes are not here: the scheme states them
(``CryptoUserScheme.openapi_security_schemes`` / ``error_codes``) and the kernel adds them to
every operation needing a ``user`` principal.
"""

from __future__ import annotations

from typing import Any

from gateway_kernel.openapi import error, json_response, op, ref

from . import errors as codes


def openapi_part() -> dict[str, Any]:
    not_implemented = {501: error("Not implemented", codes.NOT_IMPLEMENTED)}
    return {
        "paths": {
            "/auth/profile": {"get": op(
                "The signed-in user's profile (registers a new address)", "user",
                {200: json_response(ref("Profile"))}, tags=["auth"])},
            "/auth/logout": {"post": op(
                "Revoke every signature of this address made until now", "user",
                {200: json_response(ref("AuthMessage"))}, tags=["auth"])},
            "/auth/register": {"post": op(
                "Not implemented: accounts come from signatures", "public",
                not_implemented, tags=["auth"])},
            "/auth/login": {"post": op(
                "Not implemented: every request is signed", "public",
                not_implemented, tags=["auth"])},
        },
        "components": {
            "schemas": {
                "Profile": {
                    "type": "object",
                    "required": ["user_id", "public_address", "username", "email", "tier",
                                 "permissions", "license_expires_at"],
                    "properties": {
                        "user_id": {"type": "string", "description": "checksummed address"},
                        "public_address": {"type": "string"},
                        "username": {"type": "string"},
                        "email": {"type": "string"},
                        "tier": {"type": "string"},
                        "permissions": {"type": "array", "items": {"type": "string"}},
                        "license_expires_at": {"type": ["string", "null"],
                                               "format": "date-time"},
                    },
                },
                "AuthMessage": {"type": "object", "required": ["message"],
                                "properties": {"message": {"type": "string"}}},
            },
        },
    }
