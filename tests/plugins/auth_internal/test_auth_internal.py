"""auth_internal through the HTTP API: engine principals (X-Engine-Token) and service
principals (X-API-Key); and the engines plugin answering the engine-token hook (tokens are
checked for format before any query, and looked up by digest only)."""

from __future__ import annotations

import falcon
import falcon.testing
import pytest

from gateway_kernel import GatewayPlugin, Route, hookimpl
from gateway_kernel.http import send_json
from gateway_kernel.testing import SERVICE_SECRET
from gateway_plugins.auth_internal.hookspecs import EngineIdentity
from gateway_plugins.engines.tokens import new_engine_token, token_digest

ENGINE_ID = "9b2f4c1e-2d4a-4f7e-9a51-0c3b7d1e5f60"


class WhoAmI:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = req.context.principal
        send_json(resp, {"kind": principal.kind, "engine_id": principal.engine_id,
                         "claims": dict(principal.claims)})


class FakeEngines(GatewayPlugin):
    """Stands in for the engines plugin: answers the token hook and records every call."""

    name = "fake_engines"

    def __init__(self, known: dict[str, EngineIdentity]) -> None:
        self.known = known
        self.asked: list[str] = []

    @hookimpl
    def flowork_engine_by_token(self, token: str) -> EngineIdentity | None:
        self.asked.append(token)
        return self.known.get(token)

    @hookimpl
    def gateway_routes(self, gateway) -> list[Route]:
        return [Route("/probe/engine", WhoAmI(), "engine"),
                Route("/probe/service", WhoAmI(), "service")]


@pytest.fixture
def token() -> str:
    return new_engine_token()


@pytest.fixture
def engines(token: str) -> FakeEngines:
    return FakeEngines({token: EngineIdentity(ENGINE_ID, 42)})


def make_client(make_gateway, engines: FakeEngines, **settings: str) -> falcon.testing.TestClient:
    gateway = make_gateway(plugins="auth_crypto,auth_internal", settings=settings,
                           extra_plugins=[engines])
    return falcon.testing.TestClient(gateway)


def assert_error(result, status: int, code: str) -> None:
    assert result.status_code == status, result.text
    assert result.json == {"error": result.json["error"], "code": code}


# -- engine ----------------------------------------------------------------------------------


def test_engine_token_gives_an_engine_principal(make_gateway, engines, token) -> None:
    client = make_client(make_gateway, engines)
    result = client.simulate_get("/api/v1/probe/engine", headers={"X-Engine-Token": token})
    assert result.status_code == 200, result.text
    assert result.json == {"kind": "engine", "engine_id": ENGINE_ID,
                           "claims": {"owner_account_id": 42}}
    assert engines.asked == [token]  # the token as sent, asked once


def test_missing_engine_token(make_gateway, engines) -> None:
    client = make_client(make_gateway, engines)
    assert_error(client.simulate_get("/api/v1/probe/engine"), 401, "invalid_engine_token")
    assert engines.asked == []


def _tampered(token: str) -> list[str]:
    last = token[-1]
    other = "A" if last != "A" else "B"
    flipped = token[:20] + ("x" if token[20] != "x" else "y") + token[21:]
    return [
        token[:-1] + other,  # checksum wrong
        flipped,  # random part changed: checksum no longer matches
        token[:-1],  # too short
        token + "0",  # too long
        "dev_engine_" + "!" * 36,  # outside the alphabet
        "prod_engine" + token[11:],  # wrong prefix
        "",
        "x" * 10_000,
    ]


def test_a_token_no_engine_claims_is_refused(make_gateway, engines, token) -> None:
    # The scheme does not know the token format: whatever the header holds goes to the hook
    # (the engines plugin refuses a malformed one before any query, tested below).
    client = make_client(make_gateway, engines)
    for bad in _tampered(token):
        result = client.simulate_get("/api/v1/probe/engine", headers={"X-Engine-Token": bad})
        assert_error(result, 401, "invalid_engine_token")
    assert engines.asked == _tampered(token)


# -- the engines plugin answering the hook ---------------------------------------------------


def count_queries(monkeypatch, gateway) -> list[tuple[str, tuple]]:
    """Record every SQL statement (and its parameters) the gateway's database runs from now."""
    seen: list[tuple[str, tuple]] = []
    original = gateway.db.execute_sql

    def execute_sql(sql, params=None, *args, **kwargs):
        seen.append((sql, tuple(params or ())))
        return original(sql, params, *args, **kwargs)

    monkeypatch.setattr(gateway.db, "execute_sql", execute_sql)
    return seen


@pytest.fixture
def engines_gateway(make_gateway):
    return make_gateway(plugins="auth_crypto,auth_internal,engines")


def engine_token(gateway, signer) -> str:
    client = falcon.testing.TestClient(gateway)
    created = client.simulate_post("/api/v1/user/engines", json={"name": "laptop"},
                                   headers=signer.headers())
    assert created.status_code == 201, created.text
    return created.json["raw_token"]


def auth_info(gateway, token: str):
    return falcon.testing.TestClient(gateway).simulate_get(
        "/api/v1/engine/get-engine-auth-info", headers={"X-Engine-Token": token})


def test_engines_looks_a_token_up_by_its_digest_only(monkeypatch, engines_gateway,
                                                     signer) -> None:
    token = engine_token(engines_gateway, signer)
    queries = count_queries(monkeypatch, engines_gateway)
    assert auth_info(engines_gateway, token).status_code == 200
    lookups = [q for q in queries if token_digest(token) in q[1]]
    assert len(lookups) == 1  # one indexed lookup
    assert not any(token in map(str, params) for _sql, params in queries)  # never plaintext


@pytest.mark.parametrize("index", range(8))
def test_malformed_tokens_are_refused_before_any_query(monkeypatch, engines_gateway, signer,
                                                       index) -> None:
    bad = _tampered(engine_token(engines_gateway, signer))[index]
    queries = count_queries(monkeypatch, engines_gateway)
    assert_error(auth_info(engines_gateway, bad), 401, "invalid_engine_token")
    assert queries == []


def test_well_formed_unknown_token_is_refused_after_one_lookup(monkeypatch,
                                                               engines_gateway) -> None:
    unknown = new_engine_token()
    queries = count_queries(monkeypatch, engines_gateway)
    assert_error(auth_info(engines_gateway, unknown), 401, "invalid_engine_token")
    assert len(queries) == 1 and token_digest(unknown) in queries[0][1]


def test_engine_token_is_not_a_user_or_service_credential(make_gateway, engines, token) -> None:
    client = make_client(make_gateway, engines)
    headers = {"X-Engine-Token": token}
    assert_error(client.simulate_get("/api/v1/probe/service", headers=headers), 401,
                 "invalid_api_key")
    assert_error(client.simulate_get("/api/v1/auth/profile", headers=headers), 401,
                 "missing_auth")


# -- service ---------------------------------------------------------------------------------


def test_service_key_gives_a_service_principal(make_gateway, engines) -> None:
    client = make_client(make_gateway, engines)
    result = client.simulate_get("/api/v1/probe/service", headers={"X-API-Key": SERVICE_SECRET})
    assert result.status_code == 200, result.text
    assert result.json["kind"] == "service"


@pytest.mark.parametrize("key", [None, "", "wrong", SERVICE_SECRET[:-1], SERVICE_SECRET + "x",
                                 SERVICE_SECRET.upper(), "x" + SERVICE_SECRET])
def test_wrong_or_missing_service_key(make_gateway, engines, key) -> None:
    client = make_client(make_gateway, engines)
    headers = {} if key is None else {"X-API-Key": key}
    assert_error(client.simulate_get("/api/v1/probe/service", headers=headers), 401,
                 "invalid_api_key")


def test_non_ascii_secret_is_compared_on_utf8_bytes(make_gateway, engines) -> None:
    secret = "sécret-ключ-" + "z" * 24
    client = make_client(make_gateway, engines, GATEWAY_SECRET_TOKEN=secret)
    # A client sends the UTF-8 bytes; WSGI hands them over latin-1 decoded.
    sent = secret.encode("utf-8").decode("latin-1")
    ok = client.simulate_get("/api/v1/probe/service", headers={"X-API-Key": sent})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("secret", ["", "   "])
@pytest.mark.parametrize("key", [None, "", "anything"])
def test_unset_secret_closes_service_routes(make_gateway, engines, secret, key) -> None:
    client = make_client(make_gateway, engines, GATEWAY_SECRET_TOKEN=secret)
    headers = {} if key is None else {"X-API-Key": key}
    assert_error(client.simulate_get("/api/v1/probe/service", headers=headers), 503,
                 "service_auth_not_configured")


def test_unset_secret_leaves_other_principals_working(make_gateway, engines, token) -> None:
    client = make_client(make_gateway, engines, GATEWAY_SECRET_TOKEN="")
    result = client.simulate_get("/api/v1/probe/engine", headers={"X-Engine-Token": token})
    assert result.status_code == 200


def test_secret_is_never_echoed(make_gateway, engines) -> None:
    client = make_client(make_gateway, engines)
    result = client.simulate_get("/api/v1/probe/service", headers={"X-API-Key": "guess"})
    assert SERVICE_SECRET not in result.text and "guess" not in result.text
