"""The user_state plugin: per-user GUI state (GET/PUT /user/state/{key})."""

from __future__ import annotations

import json

import pytest

API = "/api/v1"


def put(client, signer, key, value=None, body=None):
    data = body if body is not None else json.dumps(value).encode()
    return client.simulate_put(f"{API}/user/state/{key}", body=data,
                               headers={**signer.headers(), "Content-Type": "application/json"})


def get(client, signer, key):
    return client.simulate_get(f"{API}/user/state/{key}", headers=signer.headers())


def test_unset_key_is_empty_array(client, signer):
    r = get(client, signer, "favorite_presets")
    assert r.status_code == 200
    assert r.json == []


@pytest.mark.parametrize("value", [["a", "b"], {"theme": "dark", "n": [1, 2.5, None]}, "text",
                                   0, None, True, {"unicode": "é✓\U0001f600"}, []])
def test_put_then_get_round_trips(client, signer, value):
    r = put(client, signer, "gui_settings", value)
    assert r.status_code == 200
    assert r.json == {"status": "success", "message": r.json["message"]}
    assert get(client, signer, "gui_settings").json == value


def test_put_overwrites(client, signer):
    put(client, signer, "favorite_presets", ["one"])
    put(client, signer, "favorite_presets", ["two", "three"])
    assert get(client, signer, "favorite_presets").json == ["two", "three"]


def test_state_is_per_user(client, make_signer):
    alice, bob = make_signer(), make_signer()
    put(client, alice, "favorite_presets", ["alice's"])
    assert get(client, bob, "favorite_presets").json == []
    put(client, bob, "favorite_presets", ["bob's"])
    assert get(client, alice, "favorite_presets").json == ["alice's"]


@pytest.mark.parametrize("key", ["UPPER", "with-dash", "a" * 65, "sp%20ace", "dot.ted", "é"])
def test_invalid_keys(client, signer, key):
    assert (get(client, signer, key).json["code"]) == "invalid_key"
    r = put(client, signer, key, [])
    assert (r.status_code, r.json["code"]) == (400, "invalid_key")


def test_longest_key_is_fine(client, signer):
    key = "k" * 64
    assert put(client, signer, key, [1]).status_code == 200
    assert get(client, signer, key).json == [1]


@pytest.mark.parametrize("value", [{"a": 1}, "x", ["ok", 1], [["nested"]], None])
def test_favorite_presets_must_be_an_array_of_strings(client, signer, value):
    r = put(client, signer, "favorite_presets", value)
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")
    assert get(client, signer, "favorite_presets").json == []


@pytest.mark.parametrize("body", [b"", b"{broken", b"NaN", b"[Infinity]"])
def test_bad_json_is_invalid_body(client, signer, body):
    r = put(client, signer, "other", body=body)
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")


def test_value_limit_is_64_kib(client, signer):
    fits = json.dumps(["x" * (64 * 1024 - 10)]).encode()
    assert len(fits) <= 64 * 1024
    assert put(client, signer, "big", body=fits).status_code == 200
    too_big = json.dumps(["x" * (64 * 1024)]).encode()
    r = put(client, signer, "big", body=too_big)
    assert (r.status_code, r.json["code"]) == (413, "body_too_large")
    assert get(client, signer, "big").json == json.loads(fits)


def test_deep_nesting_is_refused_not_crashed(client, signer):
    r = put(client, signer, "deep", body=b"[" * 30000 + b"]" * 30000)
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")
    assert put(client, signer, "deep", body=b"[" * 100 + b"]" * 100).status_code == 200


def test_lone_surrogate_is_stored_safely(client, signer):
    r = put(client, signer, "odd", body=b'["\\ud800"]')
    assert r.status_code == 200
    assert get(client, signer, "odd").json == ["\ud800"]


def test_state_needs_a_signed_user(client):
    r = client.simulate_get(f"{API}/user/state/favorite_presets")
    assert (r.status_code, r.json["code"]) == (401, "missing_auth")


def test_user_state_needs_no_engines(make_gateway, signer):
    import falcon.testing

    client = falcon.testing.TestClient(make_gateway(plugins="auth_crypto,user_state"))
    assert put(client, signer, "gui_settings", {"a": 1}).status_code == 200
    assert get(client, signer, "gui_settings").json == {"a": 1}
