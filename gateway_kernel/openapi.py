"""The OpenAPI 3.1 document, merged from every enabled plugin's ``gateway_openapi`` part.

Helpers here keep plugin parts short: ``op(...)`` builds one operation with the error
responses every route shares, ``ref("Engine")`` points at a component schema.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .api import API_PREFIX

if TYPE_CHECKING:
    from .api import AuthScheme
    from .app import Gateway

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}

#: Where :func:`op` leaves what :func:`build_document` completes from the enabled auth schemes
#: (the security requirement and the schemes' error codes); removed from the document.
_PENDING = "x-flowork-pending"

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
    """One operation. ``errors`` maps status → codes; 413/500/503 are added, and
    :func:`build_document` adds the security requirement and the 401 codes of the enabled
    auth schemes of kind ``auth``."""
    result: dict[str, Any] = {"summary": summary, "security": []}
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
    result["responses"] = {str(k): dict(v) for k, v in responses.items()}
    result[_PENDING] = {
        "auth": auth,
        "errors": {k: list(v) for k, v in (errors or {}).items()},
        "body": body is not None,
        "path_params": any(p.get("in") == "path" for p in params),
    }
    return result


def _complete(operation: dict[str, Any], auth: AuthDocs) -> None:
    """Fill in what :func:`op` left pending, for the gateway's enabled schemes."""
    pending = operation.pop(_PENDING)
    kind = pending["auth"]
    operation["security"] = auth.security.get(kind, [])
    all_errors: dict[int, list[str]] = pending["errors"]
    if kind != "public":
        for status, codes in auth.error_codes.get(kind, {}).items():
            all_errors.setdefault(status, []).extend(codes)
        # The kernel's failed-authentication throttle (gateway_kernel/throttle.py).
        all_errors.setdefault(429, []).append("too_many_requests")
    if pending["body"]:
        all_errors.setdefault(400, []).append("invalid_body")
        all_errors.setdefault(413, []).append("body_too_large")
    if pending["path_params"]:
        all_errors.setdefault(404, []).append("not_found")
    all_errors.setdefault(500, []).append("internal_error")
    all_errors.setdefault(503, []).append("database_unavailable")
    out = operation["responses"]
    for status, codes in sorted(all_errors.items()):
        out.setdefault(str(status), error(_STATUS_TEXT.get(status, "Error"), *dict.fromkeys(codes)))


@dataclass(frozen=True)
class AuthDocs:
    """What the enabled auth schemes put in the document, by principal kind."""

    #: components.securitySchemes entries of every enabled scheme.
    components: dict[str, dict[str, Any]]
    #: The security requirement list per kind (one alternative per scheme; public: none).
    security: dict[str, list[dict[str, list[str]]]]
    #: Error codes by status per kind, from the kind's schemes in order.
    error_codes: dict[str, dict[int, list[str]]]


def auth_docs(schemes: Mapping[str, Iterable[AuthScheme]]) -> AuthDocs:
    """Derive the security part of the document from the enabled schemes (by kind)."""
    components: dict[str, dict[str, Any]] = {}
    security: dict[str, list[dict[str, list[str]]]] = {"public": []}
    error_codes: dict[str, dict[int, list[str]]] = {}
    for kind, kind_schemes in schemes.items():
        requirements = security.setdefault(kind, [])
        codes = error_codes.setdefault(kind, {})
        for scheme in kind_schemes:
            components.update(scheme.openapi_security_schemes())
            requirement = scheme.openapi_requirement()
            if requirement:
                requirements.append(requirement)
            for status, found in scheme.error_codes.items():
                codes.setdefault(int(status), []).extend(found)
    return AuthDocs(components, security, error_codes)


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
    """The whole document for ``gateway``'s enabled plugins (the kernel's own plugin, with
    health, this document and metrics, first)."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Flowork Gateway", "version": "1"},
        "servers": [{"url": API_PREFIX}],
        "paths": {},
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {},
        },
    }
    auth = auth_docs(gateway.schemes)
    doc["components"]["securitySchemes"].update(auth.components)
    for _plugin, part in gateway._per_plugin("gateway_openapi", gateway=gateway):
        part = copy.deepcopy(part)  # completed below; a plugin may hand out a shared part
        # A plugin without REST paths (Socket.IO, say) describes itself in prose and a tag.
        if part.get("description"):
            info = doc["info"]
            info["description"] = "\n\n".join(filter(None, (info.get("description"),
                                                           part["description"])))
        if "tags" in part:
            doc.setdefault("tags", []).extend(part["tags"])
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
            if _PENDING in operation:
                _complete(operation, auth)
            responses = operation.setdefault("responses", {})
            for status, codes in common.items():
                responses.setdefault(str(status), error(_STATUS_TEXT.get(status, "Error"),
                                                        *dict.fromkeys(codes)))
    return doc
