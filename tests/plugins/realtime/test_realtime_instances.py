"""Realtime across instances: real gateway processes on one PostgreSQL database sharing rooms
through Redis (a channel of their own). The engine signs in on one instance, the GUI on the
other; relays, pushes, revocations and presence work across them, and an instance that dies
holding an engine's socket leaves it online no longer than one lease.

Needs FLOWORK_TEST_POSTGRES_URL and a Redis at FLOWORK_TEST_REDIS_URL (default
redis://127.0.0.1:6379/0); skipped without PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from gateway_kernel.testing import create_postgres_database, postgres_admin_url
from gateway_plugins.auth_crypto.signing import Signer
from tests.support.realtime_clients import EnginePeer, GuiPeer, start_gateway
from tests.support.stub_engine import StubEngine

pytestmark = pytest.mark.postgres
LEASE_S = 3


def redis_url() -> str:
    return os.environ.get("FLOWORK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Pair:
    a: object
    b: object
    settings: dict
    logs: object


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Iterator[Pair]:
    admin = postgres_admin_url()
    if not admin:
        pytest.skip("multi-instance tests need FLOWORK_TEST_POSTGRES_URL")
    import redis

    try:
        redis.Redis.from_url(redis_url(), socket_timeout=2).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {redis_url()}")
    url, drop = create_postgres_database(admin)
    logs = tmp_path_factory.mktemp("realtime-instances")
    settings = {"DATABASE_URL": url, "FLOWORK_DB_POOL_SIZE": "8",
                "FLOWORK_REDIS_URL": redis_url(),
                "FLOWORK_REALTIME_CHANNEL": f"flowork-test-{uuid.uuid4().hex}",
                "FLOWORK_REALTIME_LEASE_S": str(LEASE_S)}
    try:
        a = start_gateway(settings, logs)
        try:
            b = start_gateway(settings, logs)
            try:
                yield Pair(a, b, settings, logs)
            finally:
                b.stop()
        finally:
            a.stop()
        for gateway in (a, b):
            assert "Traceback" not in gateway.log_text(), gateway.log_tail()
    finally:
        drop()


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


def new_engine(gw, owner: Signer) -> dict:
    r = httpx.post(gw.url("/user/engines"), json={"name": "engine"}, headers=owner.headers())
    assert r.status_code == 201, r.text
    return r.json()


def test_engine_on_one_instance_gui_on_the_other(pair):
    owner = Signer.new()
    engine = new_engine(pair.a, owner)

    async def scenario():
        with StubEngine() as stub:
            peer = await EnginePeer.connect(pair.a.base, engine["raw_token"])
            await peer.emit("register_engine_http_info", {"http_url": stub.url})
            await asyncio.sleep(0.3)
            gui = await GuiPeer.connect(pair.b.base, owner)
            statuses = await gui.next("initial_engine_statuses")
            assert statuses[0]["status"] == "online"
            # B's proxy reaches the URL registered over A's socket.
            r = httpx.get(pair.b.url("/across"), headers={**owner.headers(),
                                                          "X-Flowork-Engine-ID": engine["id"]})
            assert r.status_code == 200 and "/api/v1/across" in stub.paths()
            await gui.emit("request_presets_list", {"target_engine_id": engine["id"]})
            command = await peer.next("request_presets_list")
            assert command["payload"]["_target_user_id"] == owner.address
            await peer.emit("response_presets_list", {"presets": [], "_target_user_id": owner.address})
            assert (await gui.next("response_presets_list"))["presets"] == []
            await peer.emit("engine_vitals_update", {"cpu": 5})
            assert (await gui.next("engine_vitals_update"))["vitals"] == {"cpu": 5}
            await peer.close()
            offline = await gui.next("engine_status_update")
            assert offline["status"] == "offline"
            await gui.close()

    run(scenario())


def test_rest_changes_on_one_instance_push_to_sockets_on_the_other(pair):
    owner, guest = Signer.new(), Signer.new()
    engine = new_engine(pair.a, owner)

    async def scenario():
        peer = await EnginePeer.connect(pair.a.base, engine["raw_token"])
        gui = await GuiPeer.connect(pair.a.base, guest)
        r = httpx.post(pair.b.url(f"/engines/{engine['id']}/shares"),
                       json={"share_with_identifier": guest.address, "role": "reader"},
                       headers=owner.headers())
        assert r.status_code == 201
        assert await peer.next("force_refresh_auth_list", timeout=1.0) == {}
        assert await gui.next("new_shared_engine") == {"engine_id": engine["id"]}
        await gui.emit("request_presets_list", {"target_engine_id": engine["id"]})
        await peer.next("request_presets_list")
        started = time.monotonic()
        r = httpx.delete(pair.b.url(f"/engines/{engine['id']}/shares/{guest.address}"),
                         headers=owner.headers())
        assert r.status_code == 200
        await peer.next("force_refresh_auth_list", timeout=1.0)
        assert time.monotonic() - started < 1.0
        await gui.next("removed_shared_engine")
        # The other instance's access cache was cleared too: the guest is refused at once.
        await gui.emit("request_presets_list", {"target_engine_id": engine["id"]})
        assert (await gui.next("response_presets_list"))["code"] == "not_found"
        r = httpx.post(pair.b.url(f"/user/engines/{engine['id']}/reset-token"),
                       headers=owner.headers())
        assert r.status_code == 200
        assert (await peer.next("auth_failed"))["code"] == "invalid_engine_token"
        await peer.wait_disconnected()
        await gui.close()

    run(scenario())


def test_an_instance_that_dies_holding_the_socket_leaves_nothing_online(pair):
    owner = Signer.new()
    engine = new_engine(pair.a, owner)
    doomed = start_gateway(pair.settings, pair.logs)

    async def scenario():
        try:
            peer = await EnginePeer.connect(doomed.base, engine["raw_token"])
            gui = await GuiPeer.connect(pair.b.base, owner)
            assert (await gui.next("initial_engine_statuses"))[0]["status"] == "online"
            listed = httpx.get(pair.b.url("/user/engines"), headers=owner.headers()).json()
            assert listed[0]["status"] == "online"
            doomed.proc.kill()  # no shutdown hooks, no release
            doomed.proc.wait(10)
            killed = time.monotonic()
            # A surviving instance notices the lapsed lease and tells the GUI.
            offline = await gui.next("engine_status_update", timeout=LEASE_S + 5)
            if offline["status"] == "online":  # the sign-in's own push may come after connect
                offline = await gui.next("engine_status_update", timeout=LEASE_S + 5)
            assert offline["status"] == "offline" and offline["engine_id"] == engine["id"]
            assert time.monotonic() - killed <= LEASE_S + 3
            listed = httpx.get(pair.b.url("/user/engines"), headers=owner.headers()).json()
            assert listed[0]["status"] == "offline"
            await gui.never("engine_status_update", 2 * LEASE_S / 3)  # announced once
            # It reconnects elsewhere and is online again.
            await peer.close()
            again = await EnginePeer.connect(pair.b.base, engine["raw_token"])
            listed = httpx.get(pair.a.url("/user/engines"), headers=owner.headers()).json()
            assert listed[0]["status"] == "online"
            await again.close()
            await gui.close()
        finally:
            doomed.stop()

    run(scenario())


def test_an_instance_stopping_gracefully_releases_its_engines_at_once(pair):
    owner = Signer.new()
    engine = new_engine(pair.a, owner)
    stopping = start_gateway(pair.settings, pair.logs)

    async def scenario():
        try:
            peer = await EnginePeer.connect(stopping.base, engine["raw_token"])
            stopping.stop()  # SIGTERM: shutdown hooks run
            listed = httpx.get(pair.b.url("/user/engines"), headers=owner.headers()).json()
            assert listed[0]["status"] == "offline"  # not after the lease: now
            await peer.close()
        finally:
            stopping.stop()
        assert "Traceback" not in stopping.log_text(), stopping.log_tail()

    run(scenario())
