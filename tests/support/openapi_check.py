"""Validate gateway responses against the gateway's own OpenAPI document.

Used by ``conftest.py`` so that every response any test receives from a documented route is
checked: its status must be documented for that operation and its JSON body must match the
documented schema. Undocumented paths (the proxy's pass-through, test-only plugins) are left
alone; the drift test in ``test_openapi.py`` makes sure no real route is undocumented.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jsonschema

from gateway_kernel.app import API_PREFIX, Gateway
from gateway_kernel.openapi import build_document

_documents: dict[int, tuple[dict[str, Any], list[tuple[re.Pattern[str], str]]]] = {}


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")


def document_for(gateway: Gateway) -> tuple[dict[str, Any], list[tuple[re.Pattern[str], str]]]:
    key = id(gateway)
    if key not in _documents:
        doc = build_document(gateway)
        # Literal segments win over templated ones (as Falcon routes them).
        patterns = sorted(((_compile(p), p) for p in doc["paths"]),
                          key=lambda item: item[1].count("{"))
        _documents[key] = (doc, patterns)
    return _documents[key]


@lru_cache(maxsize=512)
def _validator(schema_json: str, components_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    schema["components"] = json.loads(components_json)
    return jsonschema.Draft202012Validator(schema)


class ResponseMismatch(AssertionError):
    pass


def check(gateway: Gateway, method: str, path: str, status: int, content_type: str,
          body: bytes) -> None:
    if not path.startswith(API_PREFIX) or method in ("OPTIONS", "HEAD"):
        return
    doc, patterns = document_for(gateway)
    rel = path[len(API_PREFIX):] or "/"
    template = next((t for rx, t in patterns if rx.match(rel)), None)
    if template is None:
        return
    operation = doc["paths"][template].get(method.lower())
    if operation is None:
        if status != 405:
            raise ResponseMismatch(f"{method} {template} answered {status} but is not documented")
        return
    responses = operation["responses"]
    spec = responses.get(str(status)) or responses.get("default")
    if spec is None:
        raise ResponseMismatch(
            f"{method} {template} answered {status}, documented: {sorted(responses)}; body={body[:200]!r}")
    media = spec.get("content", {}).get("application/json")
    if media is None or "schema" not in media or "json" not in (content_type or ""):
        return
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ResponseMismatch(f"{method} {template} {status}: body is not JSON") from exc
    validator = _validator(json.dumps(media["schema"]), json.dumps(doc["components"]))
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        raise ResponseMismatch(
            f"{method} {template} {status}: response does not match the documented schema: "
            f"{errors[0].message} at {list(errors[0].path)}")
