"""The OpenAPI document: valid 3.1, complete (no drift), and follows the enabled plugins."""

from __future__ import annotations

import falcon
import falcon.testing
import pytest
from openapi_spec_validator import validate

from gateway_kernel.app import API_PREFIX


def served_methods(resource: object) -> set[str]:
    return {m for m in falcon.COMBINED_METHODS
            if m != "OPTIONS" and hasattr(resource, f"on_{m.lower()}")}


def test_document_is_valid_openapi_31(client):
    doc = client.simulate_get(f"{API_PREFIX}/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_route_is_documented_and_every_documented_route_exists(gateway, client):
    doc = client.simulate_get(f"{API_PREFIX}/openapi.json").json
    routed = {route.path: served_methods(route.resource) for _plugin, route in gateway.routes}
    documented = {path: {m.upper() for m in item if m.upper() in falcon.COMBINED_METHODS}
                  for path, item in doc["paths"].items()}
    # HEAD may go undocumented where GET is; everything else must match both ways.
    missing = {p: sorted(ms - {"HEAD"} - documented.get(p, set())) for p, ms in routed.items()
               if ms - {"HEAD"} - documented.get(p, set())}
    assert not missing, f"routes missing from the OpenAPI document: {missing}"
    phantom = {p: sorted(ms - routed.get(p, set())) for p, ms in documented.items()
               if ms - routed.get(p, set())}
    assert not phantom, f"documented routes that do not exist: {phantom}"


def test_security_schemes_describe_the_three_principal_kinds(client):
    doc = client.simulate_get(f"{API_PREFIX}/openapi.json").json
    schemes = doc["components"]["securitySchemes"]
    headers = {s["name"] for s in schemes.values() if s["type"] == "apiKey"}
    assert {"X-User-Address", "X-Signature", "X-Signed-Message", "X-Engine-Token",
            "X-API-Key"} <= headers
    for item in doc["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue  # a path item's servers or parameters, not an operation
            for requirement in operation.get("security", []):
                assert set(requirement) <= set(schemes)


def test_disabled_plugin_routes_vanish_from_the_document(make_gateway):
    gateway = make_gateway(plugins="auth_crypto,auth_internal,engines")
    doc = falcon.testing.TestClient(gateway).simulate_get(f"{API_PREFIX}/openapi.json").json
    assert "/user/engines" in doc["paths"]
    assert not [p for p in doc["paths"] if p.startswith(("/workflows", "/workflow-shares"))]
    assert "/news" not in doc["paths"]


@pytest.mark.parametrize("code", [
    "missing_auth", "malformed_message", "stale_signature", "address_mismatch",
    "invalid_signature", "revoked", "invalid_engine_token", "invalid_api_key",
    "service_auth_not_configured", "invalid_body", "body_too_large", "not_found",
    "conflict", "cannot_share_with_self", "user_not_found", "invalid_identifier",
    "invalid_share_token", "invalid_key", "authorization_pending", "expired_token",
    "invalid_engine_url", "engine_offline", "engine_unreachable", "engine_timeout",
    "engine_unavailable", "no_public_engine", "not_implemented", "limit_reached",
    "too_many_requests",
])
def test_every_error_code_of_the_contract_is_documented(client, code):
    text = client.simulate_get(f"{API_PREFIX}/openapi.json").text
    assert code in text
