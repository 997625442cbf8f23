"""Realtime, namespace /gui-socket, through real sockets against a real gateway process:
sign-in styles and refusals, initial statuses, the command relay both ways with its routing
and role rules, stranger and guest isolation, and the share pushes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway_plugins.auth_crypto.signing import Signer, socket_message
from tests.support.realtime_clients import EnginePeer, GuiPeer, new_engine, run, socket_headers, start_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[object]:
    logs = tmp_path_factory.mktemp("realtime-gui")
    gateway = start_gateway({"DATABASE_URL": f"sqlite:///{logs}/gateway.db"}, logs)
    try:
        yield gateway
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log_text(), gateway.log_tail()


def share(gw, owner: Signer, engine: dict, guest: Signer, role: str, alias: bool = False) -> None:
    if alias:
        r = httpx.post(gw.url(f"/user/engines/{engine['id']}/share"),
                       json={"user_id": guest.address, "role": role}, headers=owner.headers())
    else:
        r = httpx.post(gw.url(f"/engines/{engine['id']}/shares"),
                       json={"share_with_identifier": guest.address, "role": role},
                       headers=owner.headers())
    assert r.status_code == 201, r.text


# -- sign-in ---------------------------------------------------------------------------------


def test_sign_in_from_auth_headers_flat_auth_and_handshake_headers(gw):
    user = Signer.new()

    async def scenario():
        for style in ("nested", "flat", "handshake", "rest-message"):
            peer = GuiPeer()
            if style == "nested":
                await peer.open(gw.base, path="/api/socket.io/",
                                auth={"headers": socket_headers(user)})
            elif style == "flat":
                await peer.open(gw.base, path="/socket.io/", auth=socket_headers(user))
            elif style == "handshake":
                await peer.open(gw.base, headers=socket_headers(user))
            else:  # the REST message format is accepted too
                await peer.open(gw.base, auth={"headers": user.headers()})
            assert await peer.next("initial_engine_statuses") == [], style
            await peer.close()

    run(scenario())
    # Auto-registered on the first socket sign-in, like REST.
    r = httpx.get(gw.url("/auth/profile"), headers=user.headers())
    assert r.status_code == 200 and r.json()["user_id"] == user.address


def test_the_socket_message_is_not_a_rest_credential(gw):
    user = Signer.new()
    r = httpx.get(gw.url("/auth/profile"), headers=socket_headers(user))
    assert r.status_code == 401 and r.json()["code"] == "malformed_message"


@pytest.mark.parametrize("case, code", [
    ("none", "missing_auth"),
    ("stale", "stale_signature"),
    ("other-address", "address_mismatch"),
    ("bad-signature", "invalid_signature"),
    ("garbage-message", "malformed_message"),
])
def test_refused_sign_ins_are_connect_errors_with_rest_codes(gw, case, code):
    user, other = Signer.new(), Signer.new()
    if case == "none":
        auth: dict = {}
    elif case == "stale":
        auth = {"headers": socket_headers(user, int(time.time()) - 3600)}
    elif case == "other-address":
        auth = {"headers": {**socket_headers(user), "X-User-Address": other.address}}
    elif case == "bad-signature":
        auth = {"headers": {**socket_headers(user), "X-Signature": other.sign(
            socket_message(user.address))}}
    else:
        auth = {"headers": user.headers(message="hello")}

    async def scenario():
        refused = await GuiPeer().try_open(gw.base, auth=auth)
        assert refused["data"] == {"code": code} and refused["message"]

    run(scenario())


def test_a_signature_made_before_logout_is_refused(gw):
    user = Signer.new()
    before = socket_headers(user)
    r = httpx.post(gw.url("/auth/logout"), headers=user.headers())
    assert r.status_code == 200

    async def scenario():
        refused = await GuiPeer().try_open(gw.base, auth={"headers": before})
        assert refused["data"]["code"] == "revoked"

    run(scenario())


# -- statuses and relay ------------------------------------------------------------------------


def test_initial_statuses_list_owned_and_shared_engines(gw):
    owner, guest = Signer.new(), Signer.new()
    mine, theirs = new_engine(gw, guest, "Guest's own"), new_engine(gw, owner, "Shared one")
    share(gw, owner, theirs, guest, "reader")

    async def scenario():
        engine = await EnginePeer.connect(gw.base, theirs["raw_token"])
        gui = await GuiPeer.connect(gw.base, guest)
        statuses = await gui.next("initial_engine_statuses")
        by_id = {s["engine_id"]: s for s in statuses}
        assert set(by_id) == {mine["id"], theirs["id"]}
        assert by_id[theirs["id"]]["status"] == "online" and by_id[mine["id"]]["status"] == "offline"
        assert set(by_id[mine["id"]]) == {"engine_id", "name", "status", "last_seen", "vitals"}
        await gui.close()
        await engine.close()

    run(scenario())


def test_commands_reach_the_engine_with_the_gateways_context_and_replies_come_back(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        gui = await GuiPeer.connect(gw.base, owner)
        await gui.emit("load_preset", {"v": 2, "payload": {
            "name": "flow", "target_engine_id": engine["id"],
            "user_context": {"id": "0xforged", "tier": "god"}, "_target_user_id": "0xforged"}})
        command = await peer.next("request_load_preset")
        assert command["v"] == 2
        payload = command["payload"]
        assert payload["name"] == "flow" and payload["target_engine_id"] == engine["id"]
        assert payload["user_context"] == {"id": owner.address, "tier": "architect"}
        assert payload["_target_user_id"] == owner.address
        await peer.emit("response_load_preset", {"v": 2, "payload": {
            "name": "flow", "_target_user_id": owner.address}})
        reply = await gui.next("response_load_preset")
        assert reply["payload"]["name"] == "flow"
        # Default target: no target_engine_id (or the lite GUI's placeholder).
        await gui.emit("request_presets_list", {"target_engine_id": "local-engine-default"})
        assert (await peer.next("request_presets_list"))["payload"]["target_engine_id"] == engine["id"]
        await gui.emit("request_variables", {})
        await peer.next("request_variables")
        await peer.emit("forward_event_to_gui", {"v": 2, "payload": {
            "event_name": "WORKFLOW_LOG_ENTRY", "event_data": {"line": "hi"},
            "user_id": owner.address}})
        assert await gui.next("WORKFLOW_LOG_ENTRY") == {"line": "hi"}
        await gui.close()
        await peer.close()

    run(scenario())


def test_rpc_forward_carries_the_sockets_own_sign_in(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        gui = GuiPeer()
        headers = socket_headers(owner)
        await gui.open(gw.base, path="/api/socket.io/", auth={"headers": headers})
        await gui.emit("rpc_forward_to_engine", {"engine_id": engine["id"],
                                                 "payload": {"method": "ping"}})
        relayed = (await peer.next("execute_rpc_from_gui"))["payload"]
        assert relayed["payload"] == {"method": "ping"}
        assert relayed["auth"] == {"address": owner.address,
                                   "message": headers["X-Signed-Message"],
                                   "signature": headers["X-Signature"]}
        await peer.emit("rpc_response_from_engine", {"result": "pong"})
        assert await gui.next("rpc_response_from_engine") == {"result": "pong"}
        await gui.close()
        await peer.close()

    run(scenario())


def test_offline_unknown_and_strangers_engines_are_refused_with_the_reply_event(gw):
    owner, stranger = Signer.new(), Signer.new()
    engine = new_engine(gw, owner)
    offline = new_engine(gw, owner, "offline")

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        owner_gui = await GuiPeer.connect(gw.base, owner)
        gui = await GuiPeer.connect(gw.base, stranger)
        assert await gui.next("initial_engine_statuses") == []
        await gui.emit("request_presets_list", {"target_engine_id": engine["id"]})
        assert await gui.next("response_presets_list") == {"error": "Engine not found",
                                                           "code": "not_found"}
        await gui.emit("execute_workflow", {"target_engine_id": engine["id"]})
        assert (await gui.next("error"))["code"] == "not_found"
        await gui.emit("request_settings", {"target_engine_id": "not-a-uuid"})
        assert (await gui.next("settings_response"))["code"] == "not_found"
        await gui.emit("request_presets_list", {})  # the stranger has no engine at all
        assert (await gui.next("response_presets_list"))["code"] == "engine_offline"
        await owner_gui.emit("request_presets_list", {"target_engine_id": offline["id"]})
        assert (await owner_gui.next("response_presets_list"))["code"] == "engine_offline"
        await peer.never("request_presets_list", 0.3)
        assert "execute_workflow" not in peer.names()
        # A reply naming the stranger goes to the owner, never to the stranger; vitals too.
        await peer.emit("response_presets_list", {"_target_user_id": stranger.address, "x": 1})
        assert (await owner_gui.next("response_presets_list"))["x"] == 1
        await peer.emit("engine_vitals_update", {"cpu": 1})
        await owner_gui.next("engine_vitals_update")
        await gui.never("response_presets_list", 0.3)
        assert "engine_vitals_update" not in gui.names()
        assert "engine_status_update" not in gui.names()
        for client in (gui, owner_gui, peer):
            await client.close()

    run(scenario())


@pytest.mark.parametrize("role, allowed, refused", [
    ("reader", ["request_presets_list", "filesystem_list_request", "load_preset"],
     ["execute_workflow", "save_preset", "save_settings"]),
    ("runner", ["request_presets_list", "execute_workflow", "stop_workflow"],
     ["save_preset", "install_component", "rpc_forward_to_engine"]),
    ("admin", ["save_settings", "install_component", "execute_workflow", "rpc_forward_to_engine"],
     []),
])
def test_guest_roles_limit_the_commands(gw, role, allowed, refused):
    owner, guest = Signer.new(), Signer.new()
    engine = new_engine(gw, owner)
    share(gw, owner, engine, guest, role)
    outgoing = {"load_preset": "request_load_preset",
                "rpc_forward_to_engine": "execute_rpc_from_gui"}

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        gui = await GuiPeer.connect(gw.base, guest)
        for command in allowed:
            key = "engine_id" if command == "rpc_forward_to_engine" else "target_engine_id"
            await gui.emit(command, {key: engine["id"], "payload": {}})
            relayed = await peer.next(outgoing.get(command, command))
            assert relayed["payload"]["_target_user_id"] == guest.address
        for command in refused:
            key = "engine_id" if command == "rpc_forward_to_engine" else "target_engine_id"
            await gui.emit(command, {key: engine["id"]})
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        refusals = [data for name, data in gui.events if isinstance(data, dict) and "code" in data]
        assert len(refusals) == len(refused) and all(r["code"] == "not_found" for r in refusals)
        for command in refused:
            assert outgoing.get(command, command) not in peer.names()
        # The engine's reply naming the guest reaches the guest only.
        owner_gui = await GuiPeer.connect(gw.base, owner)
        await peer.emit("response_presets_list", {"_target_user_id": guest.address.lower()})
        await gui.next("response_presets_list")
        await owner_gui.never("response_presets_list", 0.3)
        for client in (gui, owner_gui, peer):
            await client.close()

    run(scenario())


@pytest.mark.parametrize("alias", [False, True])
def test_share_and_revoke_push_to_engine_and_guest_and_revoke_takes_effect(gw, alias):
    owner, guest = Signer.new(), Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        gui = await GuiPeer.connect(gw.base, guest)
        share(gw, owner, engine, guest, "runner", alias=alias)
        assert await gui.next("new_shared_engine") == {"engine_id": engine["id"]}
        assert await peer.next("force_refresh_auth_list") == {}
        await gui.emit("execute_workflow", {"target_engine_id": engine["id"]})
        await peer.next("execute_workflow")
        started = time.monotonic()
        if alias:
            r = httpx.post(gw.url(f"/user/engines/{engine['id']}/shares/delete"),
                           json={"user_id": guest.address}, headers=owner.headers())
        else:
            r = httpx.delete(gw.url(f"/engines/{engine['id']}/shares/{guest.address}"),
                             headers=owner.headers())
        assert r.status_code == 200
        assert await peer.next("force_refresh_auth_list", timeout=1.0) == {}
        assert time.monotonic() - started < 1.0  # heard within a second
        assert await gui.next("removed_shared_engine") == {"engine_id": engine["id"]}
        await gui.emit("execute_workflow", {"target_engine_id": engine["id"]})
        assert (await gui.next("error"))["code"] == "not_found"
        await peer.never("execute_workflow", 0.3)
        await gui.close()
        await peer.close()

    run(scenario())


def test_bad_gui_input_gets_error_events_and_the_socket_survives(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        gui = await GuiPeer.connect(gw.base, owner)
        await gui.emit("no_such_command", {"x": 1})
        assert (await gui.next("error"))["code"] == "unknown_event"
        await gui.emit("request_presets_list", ["not", "an", "object"])
        assert (await gui.next("response_presets_list"))["code"] == "invalid_payload"
        await gui.emit("save_preset", {"target_engine_id": engine["id"],
                                       "blob": "x" * (1024 * 1024 + 1)})
        assert (await gui.next("error"))["code"] == "payload_too_large"
        await gui.emit("request_presets_list", {"target_engine_id": engine["id"]})
        await peer.next("request_presets_list")
        await gui.close()
        await peer.close()

    run(scenario())


def test_cors_origins_are_those_of_rest(tmp_path):
    gateway = start_gateway({"DATABASE_URL": f"sqlite:///{tmp_path}/cors.db",
                             "FLOWORK_CORS_ORIGINS": "https://app.flowork.example"}, tmp_path)
    try:
        handshake = gateway.base + "/api/socket.io/?EIO=4&transport=polling"
        allowed = httpx.get(handshake, headers={"Origin": "https://app.flowork.example"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.flowork.example"
        refused = httpx.get(handshake, headers={"Origin": "https://evil.example"})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        no_origin = httpx.get(handshake)  # engines and scripts send none
        assert no_origin.status_code == 200
    finally:
        gateway.stop()


def test_open_connections_are_in_the_metrics_by_namespace(gw):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.support.procs import SERVICE_SECRET

    def gauge() -> dict[str, float]:
        text = httpx.get(gw.base + "/metrics", headers={"X-API-Key": SERVICE_SECRET}).text
        return {s.labels["namespace"]: s.value for f in text_string_to_metric_families(text)
                for s in f.samples if s.name == "flowork_realtime_connections"}

    user = Signer.new()
    before = gauge()

    async def scenario():
        peer = GuiPeer()
        await peer.open(gw.base, auth={"headers": socket_headers(user)})
        await peer.next("initial_engine_statuses")
        during = gauge()
        assert during["/gui-socket"] == before.get("/gui-socket", 0) + 1
        assert "/engine-socket" in during
        await peer.close()

    run(scenario())
