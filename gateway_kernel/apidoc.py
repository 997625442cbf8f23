"""The OpenAPI document rendered as Markdown (docs/api-reference.md).

Generic: it renders whatever paths and schemas the enabled plugins contribute, in the
document's order, so the reference changes exactly when the contract does. Written by
``scripts/render_api_reference``; a test keeps the committed file up to date.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def reference_document(plugins: str = "bundled") -> dict[str, Any]:
    """The OpenAPI document of a gateway with ``plugins`` and default settings (in-memory
    SQLite, nothing read from the environment)."""
    return _reference(plugins)[0]


def reference_markdown(plugins: str = "bundled") -> str:
    """docs/api-reference.md for a gateway with ``plugins`` and default settings."""
    return render_markdown(*_reference(plugins))


def _reference(plugins: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from .app import create_gateway
    from .openapi import auth_docs, build_document

    gateway = create_gateway(environ={}, settings={"DATABASE_URL": "sqlite:///:memory:",
                                                   "FLOWORK_PLUGINS": plugins})
    try:
        return build_document(gateway), auth_docs(gateway.schemes).security
    finally:
        gateway.close()


def render_markdown(doc: Mapping[str, Any],
                    security_by_kind: Mapping[str, Any] | None = None) -> str:
    """``security_by_kind`` (:func:`gateway_kernel.openapi.auth_docs`) names operations'
    auth by principal kind; without it, by security scheme names."""
    kinds = security_by_kind or {}
    info = doc.get("info", {})
    prefix = (doc.get("servers") or [{}])[0].get("url", "")
    out = [
        f"# {info.get('title', 'API')} reference",
        "",
        "<!-- Generated from the OpenAPI document by scripts/render_api_reference; "
        "do not edit by hand. -->",
        "",
        f"OpenAPI {doc.get('openapi', '')}, API version {info.get('version', '')}. Every path "
        f"below is relative to `{prefix}`. The gateway serves this document at "
        f"`GET {prefix}/openapi.json`; [API.md](API.md) explains the rules behind it.",
        "",
        "Auth: `public` (none), `user` (signature headers), `engine` (`X-Engine-Token`), "
        "`service` (`X-API-Key`).",
        "",
        "## Routes",
        "",
        "| method | path | auth | summary |",
        "|---|---|---|---|",
    ]
    operations = list(_operations(doc))
    for method, path, op in operations:
        anchor = _anchor(f"{method} {path}")
        out.append(f"| {method.upper()} | [`{path}`](#{anchor}) | {_auth(op, kinds)} | "
                   f"{_cell(op.get('summary', ''))} |")
    out.append("")
    for method, path, op in operations:
        out.extend(_render_operation(method, path, op, kinds))
    schemas = doc.get("components", {}).get("schemas", {})
    if schemas:
        out.extend(["## Schemas", ""])
        for name, schema in schemas.items():
            out.extend(_render_schema(name, schema))
    schemes = doc.get("components", {}).get("securitySchemes", {})
    if schemes:
        out.extend(["## Security schemes", "", "| name | in | header | description |",
                    "|---|---|---|---|"])
        for name, scheme in schemes.items():
            out.append(f"| {name} | {scheme.get('in', '')} | `{scheme.get('name', '')}` | "
                       f"{_cell(scheme.get('description', ''))} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _operations(doc: Mapping[str, Any]):
    for path, item in doc.get("paths", {}).items():
        for method in HTTP_METHODS:
            if method in item:
                yield method, path, item[method]


def _render_operation(method: str, path: str, op: Mapping[str, Any],
                      kinds: Mapping[str, Any]) -> list[str]:
    out = [f"### {method.upper()} {path}", "", f"{op.get('summary', '')}", "",
           f"Auth: `{_auth(op, kinds)}`.", ""]
    if op.get("description"):
        out.extend([op["description"], ""])
    params = op.get("parameters", [])
    if params:
        out.extend(["| parameter | in | type | required | description |", "|---|---|---|---|---|"])
        for p in params:
            out.append(f"| `{p['name']}` | {p.get('in', '')} | {_type(p.get('schema', {}))} | "
                       f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |")
        out.append("")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            schema = content.get("schema", {})
            required = "required" if body.get("required") else "optional"
            out.extend([f"Body ({media}, {required}): {_type(schema)}", ""])
            out.extend(_fields(schema))
    out.extend(["| status | answer | body |", "|---|---|---|"])
    inline: list[tuple[str, Mapping[str, Any]]] = []
    for status, response in op.get("responses", {}).items():
        schemas = [c.get("schema", {}) for c in response.get("content", {}).values()]
        bodies = [_type(s) for s in schemas]
        out.append(f"| {status} | {_cell(response.get('description', ''))} | "
                   f"{', '.join(bodies) or '-'} |")
        inline.extend((status, s) for s in schemas if "$ref" not in s and s.get("properties"))
    out.append("")
    for status, schema in inline:
        out.extend([f"Answer {status}:", "", *_fields(schema)])
    return out


def _render_schema(name: str, schema: Mapping[str, Any]) -> list[str]:
    out = [f"### {name}", ""]
    if schema.get("description"):
        out.extend([schema["description"], ""])
    fields = _fields(schema)
    if fields:
        out.extend(fields)
    else:
        out.extend([_type(schema), ""])
    return out


def _fields(schema: Mapping[str, Any]) -> list[str]:
    """A field table for an object schema (allOf parts merged), else nothing."""
    parts = schema.get("allOf", [schema])
    rows = []
    for part in parts:
        required = set(part.get("required", []))
        for field, sub in part.get("properties", {}).items():
            rows.append(f"| `{field}` | {_type(sub)} | {'yes' if field in required else 'no'} | "
                        f"{_cell(sub.get('description', ''))} |")
    if not rows:
        return []
    refs = [_type(p) for p in parts if "$ref" in p]
    head = [f"All fields of {', '.join(refs)}, and:", ""] if refs else []
    return [*head, "| field | type | required | description |", "|---|---|---|---|", *rows, ""]


def _type(schema: Mapping[str, Any]) -> str:
    """A short, readable type: `string (uuid)`, `array of [Engine](#engine)`, `"a" | "b"`."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    for key, joiner in (("allOf", " and "), ("oneOf", " or "), ("anyOf", " or ")):
        if key in schema:
            return joiner.join(_type(s) for s in schema[key])
    kind = schema.get("type", "any")
    kinds = kind if isinstance(kind, Sequence) and not isinstance(kind, str) else [kind]
    text = []
    for each in kinds:
        if each == "array":
            text.append(f"array of {_type(schema.get('items', {}))}")
        elif each == "object" and "additionalProperties" in schema and not schema.get("properties"):
            extra = schema["additionalProperties"]
            text.append(f"object of {_type(extra) if isinstance(extra, Mapping) else 'any'}")
        else:
            text.append(str(each))
    result = " or ".join(text)
    details = [f"{schema['format']}"] if "format" in schema else []
    for key, label in (("minLength", "min length"), ("maxLength", "max length"),
                       ("minimum", "min"), ("maximum", "max"), ("pattern", "pattern"),
                       ("minItems", "min items"), ("maxItems", "max items")):
        if key in schema:
            value = schema[key]
            details.append(f"{label} `{value}`" if key == "pattern" else f"{label} {value}")
    return f"{result} ({', '.join(details)})" if details else result


def _auth(op: Mapping[str, Any], kinds: Mapping[str, Any]) -> str:
    security = op.get("security", [])
    for kind, requirement in kinds.items():
        if security == requirement:
            return kind
    names = sorted({name for req in security for name in req})
    return ", ".join(names) or "public"


def _anchor(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    kept = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
