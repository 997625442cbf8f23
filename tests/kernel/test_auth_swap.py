"""Swapping the user scheme: a bearer-token ``user`` plugin instead of auth_crypto gives a
valid OpenAPI document built from its own scheme, and working engine routes."""

from __future__ import annotations

import hmac
import json

import falcon
import falcon.testing
from openapi_spec_validator import validate

from gateway_kernel import AuthScheme, Gateway, GatewayPlugin, Principal, hookimpl
from gateway_kernel.app import API_PREFIX
from gateway_kernel.errors import unauthorized
from gateway_kernel.testing import service_headers_for

TOKENS = {"alice-token-0123456789": "alice", "bob-token-0123456789": "bob"}


class BearerScheme(AuthScheme):
    name = "bearer"
    kind = "user"
    headers = ("Authorization",)
    error_codes = {401: ("missing_token", "invalid_token")}

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def openapi_security_schemes(self) -> dict[str, dict]:
        return {"Bearer": {"type": "http", "scheme": "bearer"}}

    def missing(self) -> Exception:
        return unauthorized("Send Authorization: Bearer <token>", code="missing_token")

    def authenticate(self, req: falcon.Request) -> Principal | None:
        value = req.get_header("Authorization")
        if value is None:
            return None
        kind, _, token = value.partition(" ")
        user = next((u for t, u in TOKENS.items()
                     if hmac.compare_digest(t.encode(), token.encode())), None)
        if kind.lower() != "bearer" or user is None:
            raise unauthorized("Unknown bearer token", code="invalid_token")
        return Principal(kind="user", scheme=self.name, account=self.gateway.ensure_account(user))


class BearerPlugin(GatewayPlugin):
    name = "bearer"
    version = "1"

    @hookimpl
    def gateway_auth_schemes(self, gateway: Gateway) -> list[AuthScheme]:
        return [BearerScheme(gateway)]


def bearer(user: str) -> dict[str, str]:
    token = next(t for t, u in TOKENS.items() if u == user)
    return {"Authorization": f"Bearer {token}"}


def test_bearer_user_scheme_replaces_auth_crypto(make_gateway):
    gateway = make_gateway(plugins="auth_internal,engines,sharing", extra_plugins=[BearerPlugin()])
    client = falcon.testing.TestClient(gateway)

    doc = client.simulate_get(f"{API_PREFIX}/openapi.json").json
    validate(doc)
    assert doc["components"]["securitySchemes"]["Bearer"] == {"type": "http",
                                                              "scheme": "bearer"}
    assert not {"UserAddress", "UserSignature"} & set(doc["components"]["securitySchemes"])
    listing = doc["paths"]["/user/engines"]["get"]
    assert listing["security"] == [{"Bearer": []}]
    text = json.dumps(listing["responses"]["401"])
    assert "missing_token" in text and "invalid_token" in text
    assert "invalid_signature" not in json.dumps(doc)  # no auth_crypto code left anywhere
    engine_op = doc["paths"]["/engine/heartbeat"]["post"]
    assert engine_op["security"] == [{"EngineToken": []}]

    # Engine routes work with the bearer principal (responses are checked against the doc).
    created = client.simulate_post(f"{API_PREFIX}/user/engines", json={"name": "laptop"},
                                   headers=bearer("alice"))
    assert created.status_code in (200, 201), created.text
    engine_id = created.json["id"]
    mine = client.simulate_get(f"{API_PREFIX}/user/engines", headers=bearer("alice"))
    assert mine.status_code == 200
    assert [e["id"] for e in mine.json] == [engine_id]
    theirs = client.simulate_get(f"{API_PREFIX}/user/engines", headers=bearer("bob"))
    assert theirs.status_code == 200 and theirs.json == []
    nobody = client.simulate_get(f"{API_PREFIX}/user/engines")
    assert (nobody.status_code, nobody.json["code"]) == (401, "missing_token")
    wrong = client.simulate_get(f"{API_PREFIX}/user/engines",
                                headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json["code"]) == (401, "invalid_token")
    # The testing kit's service headers follow the enabled service scheme.
    assert service_headers_for(gateway) == {"X-API-Key": gateway.config["GATEWAY_SECRET_TOKEN"]}


def test_cors_and_proxy_drop_lists_follow_the_schemes(make_gateway):
    gateway = make_gateway(plugins="auth_internal,engines,proxy", extra_plugins=[BearerPlugin()])
    client = falcon.testing.TestClient(gateway)
    preflight = client.simulate_options(f"{API_PREFIX}/user/engines",
                                        headers={"Origin": "https://gui.example"})
    allowed = preflight.headers["access-control-allow-headers"]
    assert "Authorization" in allowed and "X-User-Address" not in allowed
    forwarder = gateway.plugins["proxy"].forwarder
    assert forwarder.foreign_credential_headers == {"x-engine-token", "x-api-key"}
    assert "authorization" in forwarder.credential_headers
