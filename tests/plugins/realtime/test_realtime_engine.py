"""Realtime, namespace /engine-socket, through real sockets against a real gateway process:
both sign-in styles on both paths, every refusal, URL registration (the proxy reaches the
engine), presence (/user/engines), and the pushes REST changes cause."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway_plugins.auth_crypto.signing import Signer
from tests.support.procs import SERVICE_SECRET
from tests.support.realtime_clients import EnginePeer, GuiPeer, new_engine, run, start_gateway
from tests.support.stub_engine import StubEngine

AUTH_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[object]:
    logs = tmp_path_factory.mktemp("realtime-engine")
    settings = {"DATABASE_URL": f"sqlite:///{logs}/gateway.db",
                "FLOWORK_REALTIME_AUTH_TIMEOUT_S": str(AUTH_TIMEOUT_S)}
    gateway = start_gateway(settings, logs)
    try:
        yield gateway
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log_text(), gateway.log_tail()


@pytest.fixture(scope="module")
def stub() -> Iterator[StubEngine]:
    with StubEngine() as engine:
        yield engine


def listed(gw, owner: Signer) -> dict:
    return httpx.get(gw.url("/user/engines"), headers=owner.headers()).json()[0]


@pytest.mark.parametrize("path", ["/socket.io/", "/api/socket.io/"])
def test_connect_auth_signs_in_and_the_engine_is_online(gw, path):
    owner = Signer.new()
    engine = new_engine(gw, owner)
    assert listed(gw, owner)["status"] == "offline"

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"], engine["id"], path=path)
        assert listed(gw, owner)["status"] == "online"
        await peer.close()

    run(scenario())


def test_auth_success_names_the_owner_and_the_engine(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = EnginePeer()
        await peer.open(gw.base, auth={"v": 2, "payload": {"token": engine["raw_token"]}})
        success = await peer.next("auth_success")
        assert success["user_id"] == owner.address and success["engine_id"] == engine["id"]
        assert success["message"]
        await peer.close()

    run(scenario())


def test_auth_event_signs_in_over_polling_too(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = EnginePeer()
        await peer.open(gw.base, transports=("polling",))
        await peer.emit("auth", {"token": engine["raw_token"], "engine_id": engine["id"]})
        assert (await peer.next("auth_success"))["engine_id"] == engine["id"]
        assert listed(gw, owner)["status"] == "online"
        await peer.close()

    run(scenario())


@pytest.mark.parametrize("credentials", [
    {"token": "dev_engine_" + "A" * 36},  # checksum fails: refused before the database
    {"token": 12345},
    "not-a-dict-but-a-token",
])
def test_connect_with_a_bad_token_is_a_connect_error_with_the_rest_code(gw, credentials):
    async def scenario():
        peer = EnginePeer()
        auth = credentials if isinstance(credentials, dict) else {"token": credentials}
        refused = await peer.try_open(gw.base, auth=auth)
        assert refused["data"] == {"code": "invalid_engine_token"} and refused["message"]

    run(scenario())


def test_engine_id_that_is_not_the_tokens_engine_is_refused(gw):
    owner = Signer.new()
    engine, other = new_engine(gw, owner, "a"), new_engine(gw, owner, "b")

    async def scenario():
        refused = await EnginePeer().try_open(
            gw.base, auth={"token": engine["raw_token"], "engine_id": other["id"]})
        assert refused["data"]["code"] == "invalid_engine_token"
        peer = EnginePeer()
        await peer.open(gw.base)
        await peer.emit("auth", {"token": engine["raw_token"], "engine_id": other["id"]})
        failed = await peer.next("auth_failed")
        assert failed["code"] == "invalid_engine_token" and failed["error"] and failed["message"]
        await peer.wait_disconnected()

    run(scenario())
    assert listed(gw, owner)["status"] == "offline"


def test_auth_event_with_a_wrong_token_fails_and_disconnects(gw):
    async def scenario():
        peer = EnginePeer()
        await peer.open(gw.base)
        await peer.emit("auth", {"token": "dev_engine_nope"})
        assert (await peer.next("auth_failed"))["code"] == "invalid_engine_token"
        await peer.wait_disconnected()

    run(scenario())


def test_silence_past_the_auth_deadline_disconnects(gw):
    async def scenario():
        peer = EnginePeer()
        await peer.open(gw.base)
        started = time.monotonic()
        assert (await peer.next("auth_failed", timeout=AUTH_TIMEOUT_S + 5))["code"] == "auth_timeout"
        await peer.wait_disconnected()
        assert time.monotonic() - started >= AUTH_TIMEOUT_S - 0.5

    run(scenario())


def test_events_before_sign_in_and_unknown_events_get_an_error_event(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = EnginePeer()
        await peer.open(gw.base)
        await peer.emit("engine_vitals_update", {"cpu": 1})
        assert (await peer.next("error"))["code"] == "not_authenticated"
        await peer.emit("auth", {"token": engine["raw_token"]})
        await peer.next("auth_success")
        await peer.emit("no_such_event", {"x": 1})
        assert (await peer.next("error"))["code"] == "unknown_event"
        await peer.emit("forward_event_to_gui", {"event_name": "engine_status_update",
                                                 "event_data": {}})
        assert (await peer.next("error"))["code"] == "unknown_event"
        await peer.emit("engine_vitals_update", {"cpu": 2})  # still connected and served
        await peer.never("error", 0.3)
        await peer.close()

    run(scenario())


def test_registered_url_makes_the_engine_reachable_through_the_proxy(gw, stub):
    owner = Signer.new()
    engine = new_engine(gw, owner)
    proxied = gw.url("/realtime-probe")

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"], engine["id"])
        await peer.emit("register_engine_http_info", {"v": 2, "payload": {"http_url": stub.url}})
        await asyncio.sleep(0.3)
        r = httpx.get(proxied, headers={**owner.headers(), "X-Flowork-Engine-ID": engine["id"]})
        assert r.status_code == 200 and r.json()["engine"] == "stub", r.text
        assert "/api/v1/realtime-probe" in stub.paths()
        await peer.close()
        await asyncio.sleep(0.3)
        # The last socket closed: offline at once, the socket-registered URL dropped.
        r = httpx.get(proxied, headers={**owner.headers(), "X-Flowork-Engine-ID": engine["id"]})
        assert r.status_code == 503 and r.json()["code"] == "engine_offline"
        assert listed(gw, owner)["status"] == "offline"

    run(scenario())


def test_engine_ready_registers_the_url_and_a_refused_url_is_ignored(gw, stub):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        await peer.emit("engine_ready", {"internal_api_url": "http://169.254.169.254/"})
        await asyncio.sleep(0.3)
        r = httpx.get(gw.url("/probe"), headers={**owner.headers(),
                                                 "X-Flowork-Engine-ID": engine["id"]})
        assert r.status_code == 503  # no URL: online but not routable
        await peer.emit("engine_vitals_update", {"cpu": 3})
        await peer.never("error", 0.3)
        assert peer.client.connected
        await peer.emit("engine_ready", {"internal_api_url": stub.url, "version": "x"})
        await asyncio.sleep(0.3)
        r = httpx.get(gw.url("/probe"), headers={**owner.headers(),
                                                 "X-Flowork-Engine-ID": engine["id"]})
        assert r.status_code == 200
        await peer.close()

    run(scenario())


def test_gui_sees_its_engine_come_and_go_with_vitals(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner, "mine")

    async def scenario():
        gui = await GuiPeer.connect(gw.base, owner)
        initial = await gui.next("initial_engine_statuses")
        assert [(s["engine_id"], s["status"]) for s in initial] == [(engine["id"], "offline")]
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        online = await gui.next("engine_status_update")
        assert online["engine_id"] == engine["id"] and online["status"] == "online"
        assert set(online) == {"engine_id", "name", "status", "last_seen", "vitals"}
        await peer.emit("engine_vitals_update", {"v": 2, "payload": {"cpu": 7,
                                                                     "engine_id": "forged"}})
        vitals = await gui.next("engine_vitals_update")
        assert vitals == {"engine_id": engine["id"], "vitals": {"cpu": 7}}
        await peer.close()
        offline = await gui.next("engine_status_update")
        assert offline["engine_id"] == engine["id"] and offline["status"] == "offline"
        await gui.close()

    run(scenario())


def test_two_sockets_of_one_engine_keep_it_online_until_the_last_closes(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        first = await EnginePeer.connect(gw.base, engine["raw_token"])
        second = await EnginePeer.connect(gw.base, engine["raw_token"], event_auth=True)
        await first.close()
        await asyncio.sleep(0.3)
        assert listed(gw, owner)["status"] == "online"
        await second.close()
        await asyncio.sleep(0.3)
        assert listed(gw, owner)["status"] == "offline"

    run(scenario())


def test_reset_token_refuses_and_closes_the_engines_sockets(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        r = httpx.post(gw.url(f"/user/engines/{engine['id']}/reset-token"), headers=owner.headers())
        assert r.status_code == 200
        assert (await peer.next("auth_failed"))["code"] == "invalid_engine_token"
        await peer.wait_disconnected()
        refused = await EnginePeer().try_open(gw.base, auth={"token": engine["raw_token"]})
        assert refused["data"]["code"] == "invalid_engine_token"
        fresh = await EnginePeer.connect(gw.base, r.json()["token"])
        await fresh.close()

    run(scenario())


def test_delete_closes_the_engines_sockets_and_tells_the_owner_and_guests(gw):
    owner, guest = Signer.new(), Signer.new()
    engine = new_engine(gw, owner)
    r = httpx.post(gw.url(f"/engines/{engine['id']}/shares"),
                   json={"share_with_identifier": guest.address}, headers=owner.headers())
    assert r.status_code == 201

    async def scenario():
        gui = await GuiPeer.connect(gw.base, owner)
        guest_gui = await GuiPeer.connect(gw.base, guest)
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        r = httpx.delete(gw.url(f"/user/engines/{engine['id']}"), headers=owner.headers())
        assert r.status_code == 200
        assert (await peer.next("auth_failed"))["code"] == "invalid_engine_token"
        await peer.wait_disconnected()
        assert await gui.next("engine_deleted") == {"engine_id": engine["id"]}
        assert await guest_gui.next("removed_shared_engine") == {"engine_id": engine["id"]}
        assert "engine_deleted" not in guest_gui.names()
        await gui.close()
        await guest_gui.close()

    run(scenario())


def test_kill_switch_changes_reach_every_connected_engine(gw):
    first, second = new_engine(gw, Signer.new()), new_engine(gw, Signer.new())
    service = {"X-API-Key": SERVICE_SECRET}

    async def scenario():
        peers = [await EnginePeer.connect(gw.base, e["raw_token"]) for e in (first, second)]
        r = httpx.put(gw.url("/system/disabled-components/rt-test-module"),
                      json={"reason": "test"}, headers=service)
        assert r.status_code == 200
        for peer in peers:
            assert await peer.next("force_sync_kill_switch") == {}
        r = httpx.delete(gw.url("/system/disabled-components/rt-test-module"), headers=service)
        assert r.status_code == 200
        for peer in peers:
            assert await peer.next("force_sync_kill_switch") == {}
            await peer.close()

    run(scenario())


def test_a_flood_of_events_is_bounded_and_the_socket_keeps_working(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        for i in range(400):  # default: 100 events/s, bursts of 200
            await peer.emit("engine_vitals_update", {"n": i})
        assert (await peer.next("error"))["code"] == "rate_limited"
        await asyncio.sleep(1.5)
        await peer.emit("no_such_event")
        assert (await peer.next("error"))["code"] == "unknown_event"
        r = httpx.get(gw.url("/system/health"))
        assert r.status_code == 200
        await peer.close()

    run(scenario())


def test_oversized_and_deeply_nested_payloads_never_hurt_the_server(gw):
    owner = Signer.new()
    engine = new_engine(gw, owner)

    async def scenario():
        peer = await EnginePeer.connect(gw.base, engine["raw_token"])
        await peer.emit("engine_vitals_update", {"blob": "x" * (1024 * 1024 + 10)})
        assert (await peer.next("error"))["code"] == "payload_too_large"
        deep = EnginePeer()
        await deep.open(gw.base)
        nested: object = 1
        for _ in range(50_000):
            nested = [nested]
        try:
            await deep.emit("auth", nested)
        except Exception:  # noqa: S110 - the client may fail to encode it; the server must live
            pass
        await asyncio.sleep(0.5)
        await deep.close()
        assert httpx.get(gw.url("/system/health")).status_code == 200
        await peer.emit("engine_vitals_update", {"ok": True})
        await peer.never("error", 0.3)
        await peer.close()

    run(scenario())


def test_under_waitress_the_gateway_says_realtime_is_unavailable(tmp_path):
    from tests.support.procs import GatewayProcess

    gateway = GatewayProcess.start({"DATABASE_URL": f"sqlite:///{tmp_path}/w.db"}, tmp_path,
                                   server="waitress")
    try:
        assert httpx.get(gateway.url("/system/health")).status_code == 200
        deadline = time.monotonic() + 10
        while "realtime: Socket.IO needs" not in gateway.log_text():
            assert time.monotonic() < deadline, gateway.log_tail()
            time.sleep(0.1)
    finally:
        gateway.stop()
    assert gateway.log_text().count("realtime: Socket.IO needs") == 1
