"""Engines plugin: the owner's engine routes (list, create, delete, reset-token, rename)."""

from __future__ import annotations

import uuid

import pytest

from gateway_plugins.engines.models import Engine, EngineClaim
from gateway_plugins.engines.tokens import is_well_formed

API = "/api/v1"


def create(client, signer, name="engine"):
    r = client.simulate_post(f"{API}/user/engines", json={"name": name}, headers=signer.headers())
    assert r.status_code == 201, r.text
    return r.json




def auth_info(client, token):
    return client.simulate_get(f"{API}/engine/get-engine-auth-info",
                               headers={"X-Engine-Token": token})


def test_create_returns_engine_and_token_once(client, signer):
    created = create(client, signer, "  My Engine  ")
    assert set(created) == {"id", "name", "status", "last_seen", "raw_token"}
    assert created["name"] == "My Engine"
    assert created["status"] == "offline" and created["last_seen"] is None
    assert str(uuid.UUID(created["id"])) == created["id"]
    assert is_well_formed(created["raw_token"])
    # The token works, and it is never shown again.
    assert auth_info(client, created["raw_token"]).status_code == 200
    listed = client.simulate_get(f"{API}/user/engines", headers=signer.headers()).json
    assert listed == [{"id": created["id"], "name": "My Engine", "status": "offline",
                       "last_seen": None}]


def test_only_digest_is_stored(gateway, client, signer):
    created = create(client, signer)
    with gateway.using_db():
        row = Engine.get_by_id(created["id"])
    assert created["raw_token"] not in (row.token_digest, row.name)
    assert len(row.token_digest) == 64


def test_list_sorted_by_name_case_insensitively_and_only_mine(client, make_signer):
    alice, bob = make_signer(), make_signer()
    for name in ("beta", "Alpha", "gamma", "ALPHA2"):
        create(client, alice, name)
    create(client, bob, "aaa-bob")
    names = [e["name"] for e in
             client.simulate_get(f"{API}/user/engines", headers=alice.headers()).json]
    assert names == ["Alpha", "ALPHA2", "beta", "gamma"]


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "   "}, {"name": 5},
                                  {"name": "x" * 101}, {"name": "bad\nname"}, [], "name"])
def test_create_rejects_bad_names(client, signer, body):
    r = client.simulate_post(f"{API}/user/engines", json=body, headers=signer.headers())
    assert r.status_code == 400
    assert r.json["code"] == "invalid_body"


def test_name_of_100_chars_is_accepted(client, signer):
    assert create(client, signer, "n" * 100)["name"] == "n" * 100


def test_bad_json_and_oversized_body(client, signer):
    r = client.simulate_post(f"{API}/user/engines", body=b"{not json",
                             headers={**signer.headers(), "Content-Type": "application/json"})
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")
    r = client.simulate_post(f"{API}/user/engines", body=b"x" * (2 * 1024 * 1024),
                             headers=signer.headers())
    assert (r.status_code, r.json["code"]) == (413, "body_too_large")


def test_deeply_nested_body_is_refused_not_a_crash(client, signer):
    # ~100k levels used to overflow the C stack inside json.loads (segfault).
    r = client.simulate_post(f"{API}/user/engines", body=b"[" * 100_000 + b"]" * 100_000,
                             headers=signer.headers())
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")


def test_routes_need_a_signed_user(client):
    r = client.simulate_get(f"{API}/user/engines")
    assert r.status_code == 401
    assert r.json["code"] == "missing_auth"


def test_rename(client, signer):
    engine = create(client, signer, "old")
    r = client.simulate_put(f"{API}/user/engines/{engine['id']}/update-name",
                            json={"name": " new name "}, headers=signer.headers())
    assert r.status_code == 200
    assert r.json == {"message": r.json["message"], "id": engine["id"], "name": "new name"}
    listed = client.simulate_get(f"{API}/user/engines", headers=signer.headers()).json
    assert listed[0]["name"] == "new name"
    r = client.simulate_put(f"{API}/user/engines/{engine['id']}/update-name",
                            json={"name": ""}, headers=signer.headers())
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")


def test_reset_token_stops_old_token_at_once(client, signer):
    engine = create(client, signer)
    old = engine["raw_token"]
    r = client.simulate_post(f"{API}/user/engines/{engine['id']}/reset-token",
                             headers=signer.headers())
    assert r.status_code == 200
    assert r.json["engine_id"] == engine["id"] and set(r.json) == {"message", "token", "engine_id"}
    new = r.json["token"]
    assert new != old and is_well_formed(new)
    r = auth_info(client, old)
    assert (r.status_code, r.json["code"]) == (401, "invalid_engine_token")
    assert auth_info(client, new).json["engine_id"] == engine["id"]


def test_delete(client, signer):
    engine = create(client, signer)
    r = client.simulate_delete(f"{API}/user/engines/{engine['id']}", headers=signer.headers())
    assert r.status_code == 200 and "message" in r.json
    assert client.simulate_get(f"{API}/user/engines", headers=signer.headers()).json == []
    assert auth_info(client, engine["raw_token"]).status_code == 401
    r = client.simulate_delete(f"{API}/user/engines/{engine['id']}", headers=signer.headers())
    assert (r.status_code, r.json["code"]) == (404, "not_found")


@pytest.mark.parametrize("method,suffix,body", [
    ("DELETE", "", None),
    ("POST", "/reset-token", None),
    ("PUT", "/update-name", {"name": "stolen"}),
])
def test_other_users_engine_is_404_and_untouched(client, make_signer, method, suffix, body):
    alice, mallory = make_signer(), make_signer()
    engine = create(client, alice, "alice's")
    r = client.simulate_request(method, f"{API}/user/engines/{engine['id']}{suffix}",
                                json=body, headers=mallory.headers())
    assert (r.status_code, r.json["code"]) == (404, "not_found")
    # Still alice's, same name, token still valid.
    listed = client.simulate_get(f"{API}/user/engines", headers=alice.headers()).json
    assert [e["name"] for e in listed] == ["alice's"]
    assert auth_info(client, engine["raw_token"]).status_code == 200


@pytest.mark.parametrize("method,suffix,body", [
    ("DELETE", "", None),
    ("POST", "/reset-token", None),
    ("PUT", "/update-name", {"name": "x"}),
])
@pytest.mark.parametrize("engine_id", ["not-a-uuid", "123", str(uuid.uuid4())])
def test_malformed_or_unknown_id_is_404_from_the_engines_route(client, signer, method, suffix,
                                                               body, engine_id):
    r = client.simulate_request(method, f"{API}/user/engines/{engine_id}{suffix}", json=body,
                                headers=signer.headers())
    assert (r.status_code, r.json["code"]) == (404, "not_found")


def test_unserved_method_is_405(client, signer):
    engine = create(client, signer)
    r = client.simulate_get(f"{API}/user/engines/{engine['id']}", headers=signer.headers())
    assert r.status_code == 405
    assert r.json["code"] == "method_not_allowed"
    assert "DELETE" in r.headers["allow"]


def test_delete_cascades_to_shares_and_claims(gateway, client, make_signer, service_headers):
    from gateway_plugins.sharing.models import EngineShare

    alice, bob = make_signer(), make_signer()
    engine = create(client, alice)
    r = client.simulate_post(f"{API}/engines/{engine['id']}/shares",
                             json={"share_with_identifier": bob.address}, headers=alice.headers())
    assert r.status_code == 201
    request_id = str(uuid.uuid4())
    r = client.simulate_post(f"{API}/user/engines/select-for-auth",
                             json={"request_id": request_id, "engine_id": engine["id"]},
                             headers=alice.headers())
    assert r.status_code == 200
    with gateway.using_db():
        assert EngineShare.select().count() == 1 and EngineClaim.select().count() == 1
    assert client.simulate_delete(f"{API}/user/engines/{engine['id']}",
                                  headers=alice.headers()).status_code == 200
    shared = client.simulate_get(f"{API}/user/shared-engines", headers=bob.headers()).json
    assert shared == []
    r = client.simulate_get(f"{API}/engine/claim-token", params={"req_id": request_id},
                            headers=service_headers)
    assert (r.status_code, r.json["code"]) == (404, "authorization_pending")
    with gateway.using_db():  # the rows are gone, not just hidden
        assert EngineShare.select().count() == 0 and EngineClaim.select().count() == 0
        assert Engine.select().count() == 0
