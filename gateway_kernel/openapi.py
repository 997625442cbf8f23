"""The OpenAPI 3.1 document, merged from every enabled plugin's ``gateway_openapi`` part.

Helpers here keep plugin parts short: ``op(...)`` builds one operation with the error
responses every route shares, ``ref("Engine")`` points at a component schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Gateway

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}

#: Security requirement per principal kind (scheme names are in components.securitySchemes).
SECURITY_BY_KIND: dict[str, list[dict[str, list[str]]]] = {
    "public": [],
    "user": [{"UserAddress": [], "UserSignature": [], "UserSignedMessage": []}],
    "engine": [{"EngineToken": []}],
    "service": [{"ApiKey": []}],
}

_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

_STATUS_TEXT = {
    400: "Bad request", 401: "Not authenticated", 404: "Not found", 405: "Method not allowed",
    409: "Conflict", 413: "Body too large", 429: "Too many requests", 500: "Internal error",
    501: "Not implemented",
    502: "Bad gateway", 503: "Unavailable", 504: "Gateway timeout",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def error(description: str, *codes: str) -> dict[str, Any]:
    """An error response; ``codes`` are listed in the description and as an enum hint."""
    text = description + (f" (codes: {', '.join(codes)})" if codes else "")
    return {
        "description": text,
        "content": {"application/json": {"schema": ref("Error")}},
    }


def json_response(schema: Mapping[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(schema)}}}


def op(
    summary: str,
    auth: str,
    responses: Mapping[int | str, Mapping[str, Any]],
    *,
    body: Mapping[str, Any] | None = None,
    body_required: bool = True,
    parameters: Iterable[Mapping[str, Any]] = (),
    errors: Mapping[int, Iterable[str]] | None = None,
    tags: Iterable[str] = (),
) -> dict[str, Any]:
    """One operation. ``errors`` maps status → codes; 401/413/500 are added per ``auth``."""
    result: dict[str, Any] = {"summary": summary, "security": SECURITY_BY_KIND[auth]}
    if tags:
        result["tags"] = list(tags)
    params = list(parameters)
    if params:
        result["parameters"] = params
    if body is not None:
        result["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": dict(body)}},
        }
    out: dict[str, Any] = {str(k): dict(v) for k, v in responses.items()}
    all_errors: dict[int, list[str]] = {k: list(v) for k, v in (errors or {}).items()}
    if auth != "public":
        all_errors.setdefault(401, []).extend(
            {"user": ["missing_auth", "malformed_message", "stale_signature", "address_mismatch",
                      "invalid_signature", "revoked", "signature_exposed"],
             "engine": ["invalid_engine_token"],
             "service": ["invalid_api_key"]}[auth]
        )
        # The kernel's failed-authentication throttle (gateway_kernel/throttle.py).
        all_errors.setdefault(429, []).append("too_many_requests")
        if auth == "service":
            all_errors.setdefault(503, []).append("service_auth_not_configured")
    if body is not None:
        all_errors.setdefault(400, []).append("invalid_body")
        all_errors.setdefault(413, []).append("body_too_large")
    if any(p.get("in") == "path" for p in params):
        all_errors.setdefault(404, []).append("not_found")
    all_errors.setdefault(500, []).append("internal_error")
    all_errors.setdefault(503, []).append("database_unavailable")
    for status, codes in sorted(all_errors.items()):
        out.setdefault(str(status), error(_STATUS_TEXT.get(status, "Error"), *dict.fromkeys(codes)))
    result["responses"] = out
    return result


def path_param(name: str, description: str = "", fmt: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if fmt:
        schema["format"] = fmt
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema}


def query_param(name: str, description: str = "", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": {"type": "string"}}


def build_document(gateway: Gateway) -> dict[str, Any]:
    """The whole document for ``gateway``'s enabled plugins (kernel routes included)."""
    from .app import API_PREFIX

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Flowork Gateway", "version": "1"},
        "servers": [{"url": API_PREFIX}],
        "paths": {
            "/system/health": {
                "get": op("Database health", "public", {
                    200: json_response({"type": "object", "required": ["status", "database"],
                                        "properties": {"status": {"const": "healthy"},
                                                       "database": {"const": "connected"}}}),
                    503: json_response({"type": "object", "required": ["status", "database"],
                                        "properties": {"status": {"const": "unhealthy"},
                                                       "database": {"const": "disconnected"}}},
                                       "Database unreachable"),
                }, tags=["system"]),
            },
            "/openapi.json": {
                "get": op("This document", "public",
                          {200: json_response({"type": "object"})}, tags=["system"]),
            },
        },
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {},
        },
    }
    if "service" in gateway.schemes:
        doc["paths"]["/metrics"] = {
            "servers": [{"url": "/"}],  # not under the API prefix: where Prometheus looks
            "get": op("Prometheus metrics (text format 0.0.4)", "service", {
                200: {"description": "Metrics", "content": {"text/plain": {
                    "schema": {"type": "string"}}}},
            }, tags=["system"]),
        }
    for _plugin, part in gateway._per_plugin("gateway_openapi", gateway=gateway):
        # A plugin without REST paths (Socket.IO, say) describes itself in prose and a tag.
        if part.get("description"):
            info = doc["info"]
            info["description"] = "\n\n".join(filter(None, (info.get("description"),
                                                           part["description"])))
        doc.setdefault("tags", []).extend(part.get("tags", []))
        for path, item in part.get("paths", {}).items():
            doc["paths"].setdefault(path, {}).update(item)
        for section, entries in part.get("components", {}).items():
            doc["components"].setdefault(section, {}).update(entries)
    common: dict[int, list[str]] = {}
    for _plugin, errors in gateway._per_plugin("gateway_openapi_common_errors", gateway=gateway):
        for status, codes in errors.items():
            common.setdefault(int(status), []).extend(codes)
    for item in doc["paths"].values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status, codes in common.items():
                responses.setdefault(str(status), error(_STATUS_TEXT.get(status, "Error"),
                                                        *dict.fromkeys(codes)))
    return doc
