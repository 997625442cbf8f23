"""The killswitch plugin's part of the OpenAPI document (``gateway_openapi``)."""

from __future__ import annotations

from typing import Any

from gateway_kernel.openapi import json_response, op, path_param, ref

from .errors import INVALID_COMPONENT_ID
from .models import REASON_MAX

_STR = {"type": "string"}
_TAGS = ["system"]

SCHEMAS: dict[str, Any] = {
    "DisabledComponent": {
        "type": "object",
        "required": ["component_id", "reason", "disabled_at"],
        "properties": {"component_id": _STR, "reason": _STR,
                       "disabled_at": {"type": "string", "format": "date-time"}},
    },
}

_COMPONENT_ID = path_param("component_id", "1-128 of A-Z a-z 0-9 _ . : - (first alphanumeric)")


def openapi_part() -> dict[str, Any]:
    message = {"type": "object", "required": ["message"], "properties": {"message": _STR}}
    return {
        "paths": {
            "/system/disabled-components": {
                "get": op("The kill switch: ids of disabled components", "service",
                          {200: json_response({"type": "array", "items": _STR})}, tags=_TAGS),
            },
            "/system/disabled-components/{component_id}": {
                "put": op("Disable a component (again: updates the reason)", "service",
                          {200: json_response(ref("DisabledComponent"))},
                          body={"type": "object", "required": [],
                                "properties": {"reason": {"type": "string",
                                                          "maxLength": REASON_MAX}}},
                          body_required=False, parameters=[_COMPONENT_ID],
                          errors={400: [INVALID_COMPONENT_ID]}, tags=_TAGS),
                "delete": op("Enable a disabled component", "service",
                             {200: json_response(message)}, parameters=[_COMPONENT_ID],
                             errors={400: [INVALID_COMPONENT_ID], 404: ["not_found"]},
                             tags=_TAGS),
            },
        },
        "components": {"schemas": SCHEMAS},
    }
