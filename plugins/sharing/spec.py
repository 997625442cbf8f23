"""The sharing plugin's part of the OpenAPI document (paths relative to /api/v1)."""

from __future__ import annotations

from typing import Any

from gateway_kernel.openapi import json_response, op, path_param, ref

from .errors import CANNOT_SHARE_WITH_SELF, INVALID_PRESET_NAME, INVALID_SHARE_TOKEN, USER_NOT_FOUND
from .resources.engine_shares import ROLES
from .resources.workflow_links import MAX_LINK_NAME, MAX_PRESET_NAME, PERMISSION_LEVELS

_STR = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": required if required is not None else list(properties),
            "properties": properties}


SCHEMAS: dict[str, Any] = {
    "EngineShare": _obj({
        "user_id": {**_STR, "description": "checksummed address of the guest"},
        "public_address": _STR,
        "username": _STR,
        "email": _STR,
        "role": {"enum": list(ROLES)},
        "shared_at": _TIME,
    }),
    "EngineShareCreated": _obj({
        "message": _STR,
        "share_id": {**_STR, "format": "uuid"},
        "shared_with": ref("EngineShare"),
    }),
    "SharedEngine": _obj({
        "id": {**_STR, "format": "uuid"},
        "name": _STR,
        "status": {"enum": ["online", "offline"]},
        "last_seen": _TIME_OR_NULL,
        "owner": _obj({"user_id": _STR, "username": _STR, "public_address": _STR}),
    }),
    "WorkflowShareLink": _obj({
        "share_id": {**_STR, "format": "uuid"},
        "share_token": _STR,
        "share_url": {**_STR, "format": "uri"},
        "permission_level": {"enum": list(PERMISSION_LEVELS)},
        "link_name": _STR,
        "created_at": _TIME,
        "expires_at": _TIME_OR_NULL,
    }),
    "WorkflowShareResolution": _obj({
        "permission_level": {"enum": list(PERMISSION_LEVELS)},
        "workflow_name": _STR,
        "preset_name": _STR,
        "owner_username": _STR,
        "owner_id": {**_STR, "description": "checksummed address of the owner"},
        "link_name": _STR,
    }),
    "ShareMessage": _obj({"message": _STR}),
    "ShareStatusMessage": _obj({"status": {"const": "success"}, "message": _STR}),
}

_ROLE = {"enum": list(ROLES), "default": "runner"}
_ENGINE_ID = path_param("engine_id", "engine id (UUID); malformed ids are 404", "uuid")
_SHARED_USER = path_param("shared_user_id", "the guest's address (any case), from the list")
_PRESET = path_param("preset_name", f"1-{MAX_PRESET_NAME} characters, no control characters "
                     "or slashes")
_SHARE_ID = path_param("share_id", "link id (UUID)", "uuid")
_TOKEN = path_param("share_token", "the link's token")
_SHARE_ERRORS = {400: [CANNOT_SHARE_WITH_SELF, "invalid_identifier"],
                 404: ["not_found", USER_NOT_FOUND], 409: ["conflict", "limit_reached"]}
_TAGS = ["sharing"]


def _list_shares() -> dict[str, Any]:
    return op("Shares of an engine I own", "user",
              {200: json_response({"type": "array", "items": ref("EngineShare")})},
              parameters=[_ENGINE_ID], errors={404: ["not_found"]}, tags=_TAGS)


def _create_share(field: str) -> dict[str, Any]:
    body = _obj({field: {**_STR, "description": "username (case-insensitive) or address; an "
                         "unseen well-formed address creates that user"},
                 "role": _ROLE}, [field])
    return op("Share an engine I own with a user", "user",
              {201: json_response(ref("EngineShareCreated"), "Shared")},
              body=body, parameters=[_ENGINE_ID], errors=_SHARE_ERRORS, tags=_TAGS)


def _delete_share(summary: str, by_body: bool) -> dict[str, Any]:
    params = [_ENGINE_ID] if by_body else [_ENGINE_ID, _SHARED_USER]
    return op(summary, "user", {200: json_response(ref("ShareMessage"))},
              body=_obj({"user_id": _STR}) if by_body else None,
              parameters=params, errors={404: ["not_found"]}, tags=_TAGS)


def openapi_part() -> dict[str, Any]:
    link_body = _obj({
        "permission_level": {"enum": list(PERMISSION_LEVELS), "default": "view"},
        "link_name": {**_STR, "maxLength": MAX_LINK_NAME,
                      "description": "default 'Link N', N = the workflow's number of links"},
        "expires_at": {**_TIME_OR_NULL, "description": "must be in the future"},
    }, [])
    update_body = _obj({
        "permission_level": {"enum": list(PERMISSION_LEVELS)},
        "link_name": {**_STR, "maxLength": MAX_LINK_NAME},
        "expires_at": _TIME_OR_NULL,
    }, ["permission_level"])
    delete_alias = "Remove a share (compatibility alias, address in the body)"
    return {
        "paths": {
            "/engines/{engine_id}/shares": {
                "get": _list_shares(),
                "post": _create_share("share_with_identifier"),
            },
            "/engines/{engine_id}/shares/{shared_user_id}": {
                "delete": _delete_share("Remove a share of an engine I own", by_body=False),
            },
            "/user/shared-engines": {
                "get": op("Engines other users shared with me", "user",
                          {200: json_response({"type": "array", "items": ref("SharedEngine")})},
                          tags=_TAGS),
            },
            "/user/engines/{engine_id}/shares": {"get": _list_shares()},
            "/user/engines/{engine_id}/share": {"post": _create_share("user_id")},
            "/user/engines/{engine_id}/shares/{shared_user_id}": {
                "delete": _delete_share("Remove a share (compatibility alias)", by_body=False),
            },
            "/user/engines/{engine_id}/shares/delete": {
                "post": _delete_share(delete_alias, by_body=True),
            },
            "/workflows/{preset_name}/shares": {
                "get": op("Share links of my workflow, newest first", "user",
                          {200: json_response({"type": "array",
                                               "items": ref("WorkflowShareLink")})},
                          parameters=[_PRESET], errors={400: [INVALID_PRESET_NAME]},
                          tags=_TAGS),
                "post": op("Create a share link to my workflow", "user",
                           {201: json_response({"allOf": [ref("WorkflowShareLink"),
                                                          ref("ShareMessage")]}, "Created")},
                           body=link_body, body_required=False, parameters=[_PRESET],
                           errors={400: [INVALID_PRESET_NAME], 409: ["limit_reached"]},
                           tags=_TAGS),
            },
            "/workflow-shares/{share_id}": {
                "put": op("Change a share link I own", "user",
                          {200: json_response(_obj({"message": _STR,
                                                    "share_id": {**_STR, "format": "uuid"},
                                                    "permission_level": {
                                                        "enum": list(PERMISSION_LEVELS)}}))},
                          body=update_body, parameters=[_SHARE_ID],
                          errors={404: ["not_found"]}, tags=_TAGS),
                "delete": op("Delete a share link I own", "user",
                             {200: json_response(ref("ShareStatusMessage"))},
                             parameters=[_SHARE_ID], errors={404: ["not_found"]}, tags=_TAGS),
            },
            "/workflow-shares/resolve/{share_token}": {
                "get": op("What a share link grants (anyone with the link)", "public",
                          {200: json_response(ref("WorkflowShareResolution"))},
                          parameters=[_TOKEN], errors={404: [INVALID_SHARE_TOKEN]},
                          tags=_TAGS),
            },
        },
        "components": {"schemas": SCHEMAS},
    }
