"""Realtime rules without sockets: the presence lease as the engines plugin stores it (the
engines list, shared list and proxy resolve agree), the socket sign-in message, relay tables."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from gateway_kernel import utcnow
from gateway_plugins.auth_crypto import messages
from gateway_plugins.auth_crypto.signing import Signer, socket_message
from gateway_plugins.engines.models import Engine
from gateway_plugins.realtime import relay

HOLDER_A, HOLDER_B = "instance-a", "instance-b"


def make_engine(client, signer) -> dict:
    r = client.simulate_post("/api/v1/user/engines", json={"name": "e"}, headers=signer.headers())
    assert r.status_code == 201
    return r.json


def status(client, signer) -> str:
    return client.simulate_get("/api/v1/user/engines", headers=signer.headers()).json[0]["status"]


def lease(gateway, engine_id, holder, seconds, take_over=True) -> list[str]:
    with gateway.using_db():
        return gateway.hook.flowork_engine_socket_lease(
            engine_ids=[engine_id], holder=holder,
            until=utcnow() + dt.timedelta(seconds=seconds), take_over=take_over)


def release(gateway, engine_id, holder, url=None) -> bool:
    with gateway.using_db():
        return gateway.hook.flowork_engine_socket_release(engine_id=engine_id, holder=holder,
                                                          url=url)


def test_a_socket_lease_makes_the_engine_online_and_release_makes_it_offline_at_once(
        gateway, client, signer):
    engine = make_engine(client, signer)
    assert lease(gateway, engine["id"], HOLDER_A, 30) == [engine["id"]]
    assert status(client, signer) == "online"
    assert release(gateway, engine["id"], HOLDER_A)
    assert status(client, signer) == "offline"  # no 120 s heartbeat grace after a socket
    # A heartbeat afterwards puts the engine back on the heartbeat rule.
    r = client.simulate_post("/api/v1/engine/heartbeat", json={},
                             headers={"X-Engine-Token": engine["raw_token"]})
    assert r.status_code == 200 and status(client, signer) == "online"


def test_a_lapsed_lease_is_offline_everywhere(gateway, client, signer, make_signer):
    engine = make_engine(client, signer)
    guest = make_signer()
    r = client.simulate_post(f"/api/v1/engines/{engine['id']}/shares",
                             json={"share_with_identifier": guest.address},
                             headers=signer.headers())
    assert r.status_code == 201
    lease(gateway, engine["id"], HOLDER_A, 30)
    with gateway.using_db():
        Engine.update(url="http://127.0.0.1:9").where(Engine.id == engine["id"]).execute()
    shared = client.simulate_get("/api/v1/user/shared-engines", headers=guest.headers()).json
    assert shared[0]["status"] == "online"
    lease(gateway, engine["id"], HOLDER_A, -1)  # the holding instance died: nobody renews
    assert status(client, signer) == "offline"
    shared = client.simulate_get("/api/v1/user/shared-engines", headers=guest.headers()).json
    assert shared[0]["status"] == "offline"
    r = client.simulate_get("/api/v1/some/path", headers={**signer.headers(),
                                                          "X-Flowork-Engine-ID": engine["id"]})
    assert r.status_code == 503 and r.json["code"] == "engine_offline"


def test_only_the_holder_releases_and_renewal_reclaims_a_lapsed_lease(gateway, client, signer):
    engine = make_engine(client, signer)
    lease(gateway, engine["id"], HOLDER_A, 30)
    lease(gateway, engine["id"], HOLDER_B, 30)  # the engine reconnected to instance B
    assert not release(gateway, engine["id"], HOLDER_A)  # A's stale socket closes later
    assert status(client, signer) == "online"
    assert lease(gateway, engine["id"], HOLDER_A, 30, take_over=False) == []  # B holds it
    assert release(gateway, engine["id"], HOLDER_B)
    assert lease(gateway, engine["id"], HOLDER_A, 30, take_over=False) == [engine["id"]]


def test_release_drops_only_the_url_the_socket_registered(gateway, client, signer):
    engine = make_engine(client, signer)
    lease(gateway, engine["id"], HOLDER_A, 30)
    with gateway.using_db():
        stored = gateway.hook.flowork_engine_register_url(engine_id=engine["id"],
                                                          url="http://127.0.0.1:5000/")
        assert stored == "http://127.0.0.1:5000"
        with pytest.raises(ValueError):
            gateway.hook.flowork_engine_register_url(engine_id=engine["id"],
                                                     url="http://169.254.169.254/")
    release(gateway, engine["id"], HOLDER_A, url="http://127.0.0.1:5000")
    with gateway.using_db():
        assert Engine.get_by_id(engine["id"]).url is None


def test_socket_message_is_accepted_only_for_socket_sign_ins():
    signer = Signer.new()
    text = socket_message(signer.address)
    with pytest.raises(messages.MessageError):
        messages.parse(text)
    parsed = messages.parse(text, socket=True)
    assert parsed.kind == "legacy" and parsed.address == signer.address
    assert abs(parsed.issued_at - time.time()) < 5


def test_relay_roles_and_reply_events():
    assert relay.allowed("reader", "request_presets_list")
    assert relay.allowed("reader", "filesystem_list_request")
    assert not relay.allowed("reader", "execute_workflow")
    assert relay.allowed("runner", "pause_workflow") and not relay.allowed("runner", "save_preset")
    assert relay.allowed("admin", "uninstall_component") and relay.allowed("owner", "save_settings")
    assert not relay.allowed("stranger", "request_presets_list")
    assert relay.reply_event("request_presets_list") == "response_presets_list"
    assert relay.reply_event("request_settings") == "settings_response"
    assert relay.reply_event("execute_workflow") == "error"
    assert relay.unwrap({"v": 2, "payload": {"a": 1}}) == {"a": 1}
    assert relay.unwrap({"a": 1}) == {"a": 1}
    assert relay.is_default_target(None) and relay.is_default_target("local-engine-default")
    assert not relay.is_default_target("8b1f0c9e-0000-4000-8000-000000000000")


def test_the_socket_api_doc_covers_every_command_and_the_openapi_document_links_it(client):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "REALTIME.md").read_text()
    for command in (*relay.COMMANDS, relay.RPC_COMMAND, *relay.GUI_EVENTS, *relay.ENGINE_REPLIES):
        assert f"`{command}`" in doc, command
    openapi = client.simulate_get("/api/v1/openapi.json").json
    assert "docs/REALTIME.md" in openapi["info"]["description"]
    assert "/socket.io/" in openapi["info"]["description"]


def test_a_lapsed_lease_is_announced_once_and_a_released_one_never(gateway, client, signer):
    died, closed = make_engine(client, signer), make_engine(client, signer)
    lease(gateway, died["id"], HOLDER_A, -1)  # held by an instance that stopped renewing
    lease(gateway, closed["id"], HOLDER_A, 30)
    release(gateway, closed["id"], HOLDER_A)
    with gateway.using_db():
        assert gateway.hook.flowork_engine_lapsed_leases() == [died["id"]]
        assert gateway.hook.flowork_engine_lapsed_leases() == []
    # The engine reconnects (another instance): a renewal there works again.
    assert lease(gateway, died["id"], HOLDER_B, 30, take_over=False) == [died["id"]]
