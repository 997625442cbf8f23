"""Tested the way any third-party plugin is: with the fixtures the gateway ships (pytest11)."""

import falcon.testing
import pytest

from gateway_kernel import PluginError


@pytest.fixture
def hello_client(make_gateway):
    gateway = make_gateway(plugins="bundled,hello", settings={"HELLO_GREETING": "Howdy"})
    return falcon.testing.TestClient(gateway)


def test_greets_signed_in_user_and_counts_visits(hello_client, signer):
    first = hello_client.simulate_get("/api/v1/hello", headers=signer.headers())
    assert first.status_code == 200
    assert first.json == {"message": f"Howdy, {signer.address}!", "visits": 1}
    second = hello_client.simulate_get("/api/v1/hello", headers=signer.headers())
    assert second.json["visits"] == 2


def test_needs_a_signature(hello_client):
    r = hello_client.simulate_get("/api/v1/hello")
    assert r.status_code == 401 and r.json["code"] == "missing_auth"


def test_installed_but_not_enabled_means_not_routed(make_gateway, signer):
    gateway = make_gateway(plugins="auth_crypto,auth_internal,engines")
    assert "hello" not in gateway.plugins
    r = falcon.testing.TestClient(gateway).simulate_get("/api/v1/hello", headers=signer.headers())
    assert r.status_code == 404


def test_listed_with_models_routes_and_openapi(make_gateway):
    gateway = make_gateway(plugins="bundled,hello")
    info = {i.name: i for i in gateway.plugin_info()}["hello"]
    assert info.models == ["hello_visit"] and info.routes == ["/api/v1/hello"]
    doc = falcon.testing.TestClient(gateway).simulate_get("/api/v1/openapi.json").json
    assert "/hello" in doc["paths"]


def test_both_migrations_are_recorded(make_gateway):
    from gateway_kernel.db import MigrationRecord

    gateway = make_gateway(plugins="bundled,hello")
    with gateway.using_db():
        names = {r.name for r in MigrationRecord.select().where(MigrationRecord.plugin == "hello")}
    assert names == {"0001_visit", "0002_last_at_index"}


def test_enabled_without_a_user_scheme_fails_loudly(make_gateway):
    # hello needs "user" principals; enabled alone, no plugin supplies them.
    with pytest.raises(PluginError, match=r"'hello'.*user"):
        make_gateway(plugins="hello")


def test_websocket_echo_on_the_rest_port(make_gateway):
    gateway = make_gateway(plugins="bundled,hello")

    async def talk() -> str:
        async with falcon.testing.ASGIConductor(gateway.asgi) as conductor:
            async with conductor.simulate_ws("/api/v1/hello/echo") as ws:
                await ws.send_text("ping")
                return await ws.receive_text()

    assert falcon.async_to_sync(talk) == "ping"
