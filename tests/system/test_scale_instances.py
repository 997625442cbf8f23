"""Shared-nothing: two real ``flowork-gateway serve`` processes on one PostgreSQL database.

Whatever one instance does, the other sees: engines, heartbeats (presence and the URL the
proxy uses), claims (redeemed once across both), and logouts (refused on the other instance
within 5 s). Both processes start at the same time on an empty database, so their migrations
race too. Needs FLOWORK_TEST_POSTGRES_URL (skipped without it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from gateway_kernel.testing import create_postgres_database, postgres_admin_url
from gateway_plugins.auth_crypto.signing import Signer
from tests.support.procs import SERVICE_SECRET, GatewayProcess
from tests.support.stub_engine import StubEngine

pytestmark = pytest.mark.postgres
REVOCATION_BOUND_S = 5.0  # API.md: a logout is refused "on every instance within 5 s"


@dataclass
class Cluster:
    a: GatewayProcess
    b: GatewayProcess
    stub: StubEngine
    http: httpx.Client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    admin = postgres_admin_url()
    if not admin:
        pytest.skip("multi-instance tests need FLOWORK_TEST_POSTGRES_URL")
    url, drop = create_postgres_database(admin)
    logs = tmp_path_factory.mktemp("instances")
    settings = {"DATABASE_URL": url, "FLOWORK_ENGINE_NETWORKS": "127.0.0.0/8",
                "FLOWORK_DB_POOL_SIZE": "4"}
    try:
        with StubEngine() as stub, ThreadPoolExecutor(2) as pool:
            # Started together on an empty database: the migration lock must serialise them.
            starting = [pool.submit(GatewayProcess.start, settings, logs, 4) for _ in range(2)]
            started = [f.result() for f in starting if f.exception() is None]
            if len(started) < 2:
                for gateway in started:
                    gateway.stop()
                starting[0].result()
                starting[1].result()
            a, b = started
            try:
                with httpx.Client(timeout=10) as http:
                    yield Cluster(a, b, stub, http)
            finally:
                a.stop()
                b.stop()
            for gateway in (a, b):
                assert "Traceback" not in gateway.log_text(), gateway.log_tail()
    finally:
        drop()


def create_engine(cluster: Cluster, gateway: GatewayProcess, owner: Signer, name: str) -> dict:
    r = cluster.http.post(gateway.url("/user/engines"), json={"name": name}, headers=owner.headers())
    assert r.status_code == 201, r.text
    return r.json()


def test_both_instances_are_healthy_on_one_migrated_database(cluster):
    for gateway in (cluster.a, cluster.b):
        r = cluster.http.get(gateway.url("/system/health"))
        assert r.json() == {"status": "healthy", "database": "connected"}


def test_engine_created_on_one_instance_is_used_on_the_other(cluster):
    owner = Signer.new()
    engine = create_engine(cluster, cluster.a, owner, "made on A")
    r = cluster.http.get(cluster.b.url("/user/engines"), headers=owner.headers())
    assert [e["id"] for e in r.json()] == [engine["id"]]
    token = {"X-Engine-Token": engine["raw_token"]}
    r = cluster.http.get(cluster.b.url("/engine/get-engine-auth-info"), headers=token)
    assert r.status_code == 200 and r.json()["engine_id"] == engine["id"]
    assert r.json()["authorized_addresses"] == [owner.address.lower()]
    r = cluster.http.put(cluster.b.url(f"/user/engines/{engine['id']}/update-name"),
                         json={"name": "renamed on B"}, headers=owner.headers())
    assert r.status_code == 200
    r = cluster.http.get(cluster.a.url("/user/engines"), headers=owner.headers())
    assert r.json()[0]["name"] == "renamed on B"
    # A token reset on A is refused on B at once.
    r = cluster.http.post(cluster.a.url(f"/user/engines/{engine['id']}/reset-token"),
                          headers=owner.headers())
    assert r.status_code == 200
    r = cluster.http.get(cluster.b.url("/engine/get-engine-auth-info"), headers=token)
    assert r.status_code == 401


def test_heartbeat_on_one_instance_is_seen_and_routed_by_the_other(cluster):
    owner, guest = Signer.new(), Signer.new()
    engine = create_engine(cluster, cluster.a, owner, "beating")
    r = cluster.http.get(cluster.b.url("/user/engines"), headers=owner.headers())
    assert r.json()[0]["status"] == "offline" and r.json()[0]["last_seen"] is None
    r = cluster.http.post(cluster.a.url("/engine/heartbeat"), json={"url": cluster.stub.url},
                          headers={"X-Engine-Token": engine["raw_token"]})
    assert r.status_code == 200, r.text
    r = cluster.http.get(cluster.b.url("/user/engines"), headers=owner.headers())
    assert r.json()[0]["status"] == "online" and r.json()[0]["last_seen"]
    r = cluster.http.post(cluster.a.url(f"/engines/{engine['id']}/shares"),
                          json={"share_with_identifier": guest.address}, headers=owner.headers())
    assert r.status_code == 201
    r = cluster.http.get(cluster.b.url("/user/shared-engines"), headers=guest.headers())
    assert [(e["id"], e["status"]) for e in r.json()] == [(engine["id"], "online")]
    # The URL reported through A is where B proxies the owner's and the guest's requests.
    for user in (owner, guest):
        r = cluster.http.get(cluster.b.url("/workflows/list"),
                             headers={**user.headers(), "X-Flowork-Engine-ID": engine["id"]})
        assert r.status_code == 200, r.text
        assert r.json() == {"engine": "stub", "path": "/api/v1/workflows/list"}


def test_claim_approved_on_one_instance_is_claimed_on_the_other_once(cluster):
    owner = Signer.new()
    engine = create_engine(cluster, cluster.a, owner, "claimed")
    request_id = str(uuid.uuid4())
    r = cluster.http.post(cluster.a.url("/user/engines/select-for-auth"),
                          json={"request_id": request_id, "engine_id": engine["id"]},
                          headers=owner.headers())
    assert r.status_code == 200, r.text
    barrier = threading.Barrier(6)

    def claim(gateway: GatewayProcess) -> httpx.Response:
        barrier.wait(timeout=30)
        with httpx.Client(timeout=10) as http:
            return http.get(gateway.url("/engine/claim-token"), params={"req_id": request_id},
                            headers={"X-API-Key": SERVICE_SECRET})

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(claim, [cluster.a, cluster.b] * 3))
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) == 1, [(r.status_code, r.text) for r in results]
    assert all(r.json()["code"] == "expired_token" for r in results if r.status_code != 200)
    token = winners[0].json()["token"]
    for gateway in (cluster.a, cluster.b):
        r = cluster.http.get(gateway.url("/engine/get-engine-auth-info"),
                             headers={"X-Engine-Token": token})
        assert r.status_code == 200
        r = cluster.http.get(gateway.url("/engine/get-engine-auth-info"),
                             headers={"X-Engine-Token": engine["raw_token"]})
        assert r.status_code == 401


def test_logout_on_one_instance_revokes_on_the_other_within_5_s(cluster):
    user = Signer.new()
    signed = user.headers()
    for gateway in (cluster.a, cluster.b):  # both instances have verified and cached it
        assert cluster.http.get(gateway.url("/auth/profile"), headers=signed).status_code == 200
    r = cluster.http.post(cluster.a.url("/auth/logout"), headers=signed)
    assert r.status_code == 200
    logged_out = time.monotonic()
    assert cluster.http.get(cluster.a.url("/auth/profile"), headers=signed).status_code == 401
    while True:
        r = cluster.http.get(cluster.b.url("/auth/profile"), headers=signed)
        if r.status_code == 401:
            assert r.json()["code"] == "revoked"
            break
        assert r.status_code == 200, r.text
        assert time.monotonic() - logged_out < REVOCATION_BOUND_S, "B still accepts the message"
        time.sleep(0.05)
    # A message dated after the cut-off (the logout's time + the 15 s skew) works on both:
    # once two seconds have passed, one dated 15 s ahead is past it and still acceptable.
    time.sleep(max(0.0, logged_out + 2.2 - time.monotonic()))
    fresh = user.headers(timestamp=int(time.time()) + 15)
    for gateway in (cluster.a, cluster.b):
        assert cluster.http.get(gateway.url("/auth/profile"), headers=fresh).status_code == 200


def test_signature_spent_on_one_instance_is_refused_on_the_other_at_once(cluster):
    owner, guest = Signer.new(), Signer.new()
    engine = create_engine(cluster, cluster.a, owner, "guest-visited")
    r = cluster.http.post(cluster.a.url("/engine/heartbeat"), json={"url": cluster.stub.url},
                          headers={"X-Engine-Token": engine["raw_token"]})
    assert r.status_code == 200, r.text
    r = cluster.http.post(cluster.a.url(f"/engines/{engine['id']}/shares"),
                          json={"share_with_identifier": guest.address}, headers=owner.headers())
    assert r.status_code == 201, r.text
    signed = guest.headers()
    # B has verified (and cached) the guest's signature before it is exposed.
    assert cluster.http.get(cluster.b.url("/auth/profile"), headers=signed).status_code == 200
    r = cluster.http.get(cluster.a.url("/workflows"),
                         headers={**signed, "X-Flowork-Engine-ID": engine["id"]})
    assert r.status_code == 200, r.text
    # The owner's engine has seen it now: B refuses it for anything but that engine.
    r = cluster.http.get(cluster.b.url("/auth/profile"), headers=signed)
    assert r.status_code == 401 and r.json()["code"] == "signature_exposed"
    r = cluster.http.get(cluster.b.url("/workflows"),
                         headers={**signed, "X-Flowork-Engine-ID": engine["id"]})
    assert r.status_code == 200, r.text
