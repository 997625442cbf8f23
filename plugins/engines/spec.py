"""The engines plugin's part of the OpenAPI document (``gateway_openapi``)."""

from __future__ import annotations

from typing import Any

from gateway_kernel.openapi import json_response, op, path_param, query_param, ref

from .errors import AUTHORIZATION_PENDING, EXPIRED_TOKEN, INVALID_ENGINE_URL
from .resources.owner import NAME_MAX

_STR = {"type": "string"}
_UUID = {"type": "string", "format": "uuid"}
_ISO_OR_NULL = {"type": ["string", "null"], "format": "date-time"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _message(**extra: Any) -> dict[str, Any]:
    return _obj(["message", *extra], message=_STR, **extra)


SCHEMAS: dict[str, Any] = {
    "Engine": _obj(
        ["id", "name", "status", "last_seen"],
        id=_UUID,
        name=_STR,
        status={"type": "string", "enum": ["online", "offline"]},
        last_seen=_ISO_OR_NULL,
    ),
    "NewEngine": {
        "allOf": [
            ref("Engine"),
            _obj(["raw_token"], raw_token={
                "type": "string", "description": "the engine token; shown only this once"}),
        ]
    },
    "EngineName": _obj(["name"], name={"type": "string", "minLength": 1, "maxLength": NAME_MAX,
                                       "description": "trimmed before the length check"}),
    "EngineAuthInfo": _obj(
        ["engine_id", "authorized_addresses", "roles"],
        engine_id=_UUID,
        authorized_addresses={"type": "array", "items": _STR,
                              "description": "lowercase addresses: owner first, then guests"},
        roles={"type": "object", "additionalProperties": {
            "type": "string", "enum": ["owner", "reader", "runner", "admin"]}},
    ),
    "Heartbeat": {
        "type": "object",
        "properties": {
            "url": {"type": ["string", "null"], "maxLength": 2048, "description": (
                "base URL the proxy should use: http(s), a host, no credentials, query or "
                "fragment, a well-formed host and port; link-local, cloud metadata, "
                "multicast and unspecified addresses (in any disguise: IPv4-mapped, 6to4, "
                "NAT64, Teredo, shorthand IPv4) and the gateway's own address are refused; with "
                "FLOWORK_ENGINE_NETWORKS set, the host must be an IP literal inside those "
                "networks. Absent keeps the stored URL; null or empty clears it.")},
            "vitals": {"type": ["object", "null"], "description": "accepted, not stored"},
        },
    },
    "HeartbeatAnswer": _obj(
        ["status", "engine_id", "interval_s"],
        status={"const": "ok"}, engine_id=_UUID,
        interval_s={"type": "integer", "description": "seconds until the next heartbeat"},
    ),
    "SelectForAuth": _obj(["request_id", "engine_id"], request_id=_UUID, engine_id=_UUID),
    "ClaimedToken": _obj(["status", "token", "engine_id"], status={"const": "success"},
                         token=_STR, engine_id=_UUID),
    "StatusMessage": _obj(["status", "message"], status={"const": "success"}, message=_STR),
}

_ENGINE_ID = path_param("engine_id", "engine id (UUID); malformed ids are 404", "uuid")


def openapi_part() -> dict[str, Any]:
    engines = ["engines"]
    return {
        "paths": {
            "/user/engines": {
                "get": op("My engines, sorted by name (case-insensitive)", "user",
                          {200: json_response({"type": "array", "items": ref("Engine")})},
                          tags=engines),
                "post": op("Register an engine; the answer has its token, shown once", "user",
                           {201: json_response(ref("NewEngine"), "Created")},
                           body=ref("EngineName"), errors={409: ["limit_reached"]},
                           tags=engines),
            },
            "/user/engines/{engine_id}": {
                "delete": op("Delete my engine (its shares and pending claims go too)", "user",
                             {200: json_response(_message())}, parameters=[_ENGINE_ID],
                             errors={404: ["not_found"]}, tags=engines),
            },
            "/user/engines/{engine_id}/reset-token": {
                "post": op("New token for my engine; the old one stops working at once", "user",
                           {200: json_response(_message(token=_STR, engine_id=_UUID))},
                           parameters=[_ENGINE_ID], errors={404: ["not_found"]}, tags=engines),
            },
            "/user/engines/{engine_id}/update-name": {
                "put": op("Rename my engine", "user",
                          {200: json_response(_message(id=_UUID, name=_STR))},
                          body=ref("EngineName"), parameters=[_ENGINE_ID],
                          errors={404: ["not_found"]}, tags=engines),
            },
            "/user/engines/select-for-auth": {
                "post": op("Approve a dashboard claim for my engine (claim flow, step 2)",
                           "user", {200: json_response(ref("StatusMessage"))},
                           body=ref("SelectForAuth"),
                           errors={404: ["not_found"], 409: ["conflict"]}, tags=engines),
            },
            "/engine/get-engine-auth-info": {
                "get": op("Who may use the calling engine, and in which role", "engine",
                          {200: json_response(ref("EngineAuthInfo"))}, tags=engines),
            },
            "/engine/heartbeat": {
                "post": op("Mark the calling engine online and record its URL", "engine",
                           {200: json_response(ref("HeartbeatAnswer"))},
                           body=ref("Heartbeat"), body_required=False,
                           errors={400: [INVALID_ENGINE_URL]}, tags=engines),
            },
            "/engine/claim-token": {
                "get": op("Redeem an approved claim: rotates the engine's token, once",
                          "service", {200: json_response(ref("ClaimedToken"))},
                          parameters=[query_param("req_id", "the dashboard's request id (UUID)",
                                                  required=True)],
                          errors={400: ["invalid_body"],
                                  404: [AUTHORIZATION_PENDING, EXPIRED_TOKEN]},
                          tags=engines),
            },
        },
        "components": {"schemas": SCHEMAS},
    }
