"""The user_state plugin's part of the OpenAPI document (``gateway_openapi``)."""

from __future__ import annotations

from typing import Any

from gateway_kernel.openapi import json_response, op, path_param, ref

from .errors import INVALID_KEY
from .resources import MAX_VALUE_BYTES

_STR = {"type": "string"}
_TAGS = ["user"]

SCHEMAS: dict[str, Any] = {
    "StateSaved": {"type": "object", "required": ["status", "message"],
                   "properties": {"status": {"const": "success"}, "message": _STR}},
}

_KEY = path_param("key", "[a-z0-9_]{1,64}")


def openapi_part() -> dict[str, Any]:
    return {
        "paths": {
            "/user/state/{key}": {
                "get": op("A stored GUI state value ([] if unset)", "user",
                          {200: json_response({})}, parameters=[_KEY],
                          errors={400: [INVALID_KEY]}, tags=_TAGS),
                "put": op(f"Store a GUI state value (any JSON up to {MAX_VALUE_BYTES} bytes; "
                          "favorite_presets: array of strings)", "user",
                          {200: json_response(ref("StateSaved"))}, body={},
                          parameters=[_KEY], errors={400: [INVALID_KEY], 409: ["limit_reached"]},
                          tags=_TAGS),
            },
        },
        "components": {"schemas": SCHEMAS},
    }
