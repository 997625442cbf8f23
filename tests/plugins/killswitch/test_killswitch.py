"""The killswitch plugin: disabled components over HTTP and the CLI."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway_kernel import cli

API = "/api/v1"
BASE = f"{API}/system/disabled-components"


def test_disable_list_enable(client, service_headers):
    assert client.simulate_get(BASE, headers=service_headers).json == []
    r = client.simulate_put(f"{BASE}/flowork.module.webhook", json={"reason": " CVE-1 "},
                            headers=service_headers)
    assert r.status_code == 200
    assert r.json["component_id"] == "flowork.module.webhook"
    assert r.json["reason"] == "CVE-1"
    dt.datetime.fromisoformat(r.json["disabled_at"])
    client.simulate_put(f"{BASE}/a_first", json={}, headers=service_headers)
    r = client.simulate_get(BASE, headers=service_headers)
    assert r.json == ["a_first", "flowork.module.webhook"]  # a bare array of ids
    r = client.simulate_delete(f"{BASE}/a_first", headers=service_headers)
    assert r.status_code == 200 and "message" in r.json
    assert client.simulate_get(BASE, headers=service_headers).json == ["flowork.module.webhook"]


def test_disabling_again_updates_the_reason_and_keeps_the_time(client, service_headers):
    first = client.simulate_put(f"{BASE}/x", json={"reason": "one"}, headers=service_headers).json
    second = client.simulate_put(f"{BASE}/x", json={"reason": "two"}, headers=service_headers).json
    assert second["reason"] == "two"
    assert second["disabled_at"] == first["disabled_at"]
    assert client.simulate_get(BASE, headers=service_headers).json == ["x"]


def test_enabling_a_component_that_is_not_disabled_is_404(client, service_headers):
    r = client.simulate_delete(f"{BASE}/never", headers=service_headers)
    assert (r.status_code, r.json["code"]) == (404, "not_found")


@pytest.mark.parametrize("component_id", ["-leading-dash", "a" * 129, "has%20space",
                                          "semi;colon", "%2e%2e"])
def test_component_id_is_validated(client, service_headers, component_id):
    for method in ("PUT", "DELETE"):
        r = client.simulate_request(method, f"{BASE}/{component_id}", json={},
                                    headers=service_headers)
        assert (r.status_code, r.json["code"]) == (400, "invalid_component_id"), method


@pytest.mark.parametrize("body", [{"reason": 5}, {"reason": "r" * 501}, [1]])
def test_reason_is_validated(client, service_headers, body):
    r = client.simulate_put(f"{BASE}/c1", json=body, headers=service_headers)
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")
    assert client.simulate_get(BASE, headers=service_headers).json == []


@pytest.mark.parametrize("method,path", [("GET", BASE), ("PUT", f"{BASE}/c1"),
                                         ("DELETE", f"{BASE}/c1")])
def test_kill_switch_needs_the_service_key(client, signer, method, path):
    for headers in ({}, {"X-API-Key": "wrong"}, signer.headers()):
        r = client.simulate_request(method, path, json={}, headers=headers)
        assert (r.status_code, r.json["code"]) == (401, "invalid_api_key")


def test_kill_switch_is_closed_without_a_configured_secret(make_gateway):
    import falcon.testing

    client = falcon.testing.TestClient(make_gateway(settings={"GATEWAY_SECRET_TOKEN": ""}))
    r = client.simulate_get(BASE, headers={"X-API-Key": ""})
    assert (r.status_code, r.json["code"]) == (503, "service_auth_not_configured")


def test_cli_list_disable_enable(gateway_database_url, client, service_headers, capsys,
                                 monkeypatch):
    monkeypatch.setenv("DATABASE_URL", gateway_database_url)
    monkeypatch.setenv("FLOWORK_PLUGINS", "bundled")
    assert cli.main(["components", "disable", "flowork.bad", "--reason", "broken"]) == 0
    assert "flowork.bad" in capsys.readouterr().out
    # The HTTP side sees what the CLI did (same database).
    assert client.simulate_get(BASE, headers=service_headers).json == ["flowork.bad"]
    assert cli.main(["components", "list"]) == 0
    out = capsys.readouterr().out
    assert "flowork.bad" in out and "broken" in out
    assert cli.main(["components", "enable", "flowork.bad"]) == 0
    assert client.simulate_get(BASE, headers=service_headers).json == []
    assert cli.main(["components", "enable", "flowork.bad"]) == 1
    assert cli.main(["components", "disable", "bad id"]) == 2
    assert "component_id" in capsys.readouterr().err


# -- the kill switch is a plugin of its own -------------------------------------------------


def test_kill_switch_needs_neither_engines_nor_realtime(make_gateway, service_headers):
    import falcon.testing

    client = falcon.testing.TestClient(make_gateway(plugins="auth_internal,killswitch"))
    r = client.simulate_put(f"{BASE}/c1", json={"reason": "r"}, headers=service_headers)
    assert r.status_code == 200, r.text
    assert client.simulate_get(BASE, headers=service_headers).json == ["c1"]


def test_realtime_runs_without_the_kill_switch(make_gateway, service_headers):
    import falcon.testing

    # realtime implements killswitch's hook as optional: leaving killswitch out is no error.
    gateway = make_gateway(plugins="auth_crypto,auth_internal,engines,sharing,realtime")
    assert "killswitch" not in gateway.plugins
    r = falcon.testing.TestClient(gateway).simulate_get(BASE, headers=service_headers)
    assert r.status_code == 404


def test_plugins_command_lists_killswitch_and_user_state(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path.as_posix()}/p.db")
    monkeypatch.setenv("FLOWORK_PLUGINS", "bundled")
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    killswitch = out[out.index("killswitch "):out.index("user_state ")]
    assert "  declares: flowork_kill_switch_changed\n" in killswitch
    assert "  tables:   engines_disabled_component\n" in killswitch
    assert "/api/v1/system/disabled-components/{component_id}" in killswitch
    user_state = out[out.index("user_state "):]
    user_state = user_state[:user_state.index("\n", user_state.index("  settings: "))]
    assert "  tables:   engines_user_state\n" in user_state
    assert "/api/v1/user/state/{key}" in user_state
    assert "  settings: FLOWORK_LIMIT_STATE_KEYS_PER_USER" in user_state
