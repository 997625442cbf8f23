"""OpenAPI conformance: a gateway's responses checked against its own OpenAPI document.

Part of the testing kit (:mod:`gateway_kernel.testing`: the ``openapi_check`` fixture checks
every response a test client receives). :func:`check` takes one response of a documented
route: its status must be documented for that operation and its JSON body must match the
documented schema. Undocumented paths (the proxy's pass-through, test-only plugins) are left
alone; that every real route is documented is a separate check (the project's
``tests/kernel/test_openapi.py``). Needs ``jsonschema`` (in the ``test`` extra).
"""

from __future__ import annotations

import json
import re
import weakref
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .api import API_PREFIX
from .openapi import build_document

if TYPE_CHECKING:
    import jsonschema

    from .app import Gateway

_Patterns = list[tuple[re.Pattern[str], str]]
_documents: weakref.WeakKeyDictionary[Gateway, tuple[dict[str, Any], _Patterns]] = (
    weakref.WeakKeyDictionary())


class ResponseMismatch(AssertionError):
    """A response that its operation in the OpenAPI document does not describe."""


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")


def document_for(gateway: Gateway) -> tuple[dict[str, Any], _Patterns]:
    """``gateway``'s document and its path patterns (built once per gateway)."""
    found = _documents.get(gateway)
    if found is None:
        doc = build_document(gateway)
        # Literal segments win over templated ones (as Falcon routes them).
        patterns = sorted(((_compile(p), p) for p in doc["paths"]),
                          key=lambda item: item[1].count("{"))
        found = _documents[gateway] = (doc, patterns)
    return found


@lru_cache(maxsize=512)
def _validator(schema_json: str, components_json: str) -> jsonschema.protocols.Validator:
    import jsonschema

    schema = json.loads(schema_json)
    schema["components"] = json.loads(components_json)
    return jsonschema.Draft202012Validator(schema)


def check(gateway: Gateway, method: str, path: str, status: int, content_type: str,
          body: bytes) -> None:
    """Raise :class:`ResponseMismatch` if this response of ``gateway`` is not what its
    document says ``method path`` answers (paths outside the API prefix, OPTIONS and HEAD,
    and undocumented paths are not checked)."""
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
