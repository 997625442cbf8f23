"""Issue 14, finding 1: an engine owner must not be able to take over a guest's account.

The attack, against a real ``flowork-gateway serve`` and real stub engines: M creates an engine,
shares it with V (V is not asked) and heartbeats more recently than V's own engine. Before the
fix, V's proxied request without X-Flowork-Engine-ID went to M's engine, and M replayed V's
signature headers at the gateway to list V's engines, reset V's engine token and share V's
engine with himself."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.procs import GatewayProcess
from tests.support.stub_engine import StubEngine

SIGNATURE_HEADERS = ("x-user-address", "x-signature", "x-signed-message")


@pytest.fixture
def server(tmp_path):
    with GatewayProcess.start({"DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}"},
                              log_dir=tmp_path) as gw:
        yield gw


def create_engine(gw, signer, name):
    r = httpx.post(gw.url("/user/engines"), json={"name": name}, headers=signer.headers())
    assert r.status_code == 201, r.text
    return r.json()


def heartbeat(gw, engine, url):
    r = httpx.post(gw.url("/engine/heartbeat"), json={"url": url},
                   headers={"X-Engine-Token": engine["raw_token"]})
    assert r.status_code == 200, r.text


def stolen(stub):
    """The signature headers the attacker's engine saw, as the attacker would replay them."""
    assert stub.requests, "the attacker's engine saw nothing"
    return {k: v for k, v in stub.requests[-1].headers.items() if k in SIGNATURE_HEADERS}


def test_default_target_is_never_a_shared_engine(server, make_signer):
    mallory, victim = make_signer(), make_signer()
    with StubEngine() as own_stub, StubEngine() as evil_stub:
        own = create_engine(server, victim, "victim's")
        heartbeat(server, own, own_stub.url)
        evil = create_engine(server, mallory, "bait")
        r = httpx.post(server.url(f"/engines/{evil['id']}/shares"),
                       json={"share_with_identifier": victim.address}, headers=mallory.headers())
        assert r.status_code == 201, r.text
        heartbeat(server, evil, evil_stub.url)  # seen after the victim's own engine

        r = httpx.get(server.url("/workflows"), headers=victim.headers())
        assert r.status_code == 200, r.text
        assert own_stub.paths() == ["/api/v1/workflows"]
        assert evil_stub.requests == []  # the victim's signature never reached mallory


def test_a_signature_seen_by_another_owner_is_spent(server, make_signer):
    mallory, victim = make_signer(), make_signer()
    with StubEngine() as evil_stub:
        target = create_engine(server, victim, "victim's")
        evil = create_engine(server, mallory, "bait")
        r = httpx.post(server.url(f"/engines/{evil['id']}/shares"),
                       json={"share_with_identifier": victim.address}, headers=mallory.headers())
        assert r.status_code == 201, r.text
        heartbeat(server, evil, evil_stub.url)

        # The victim uses the shared engine on purpose: the engine sees the signature.
        signed = victim.headers()
        r = httpx.get(server.url("/workflows"),
                      headers={**signed, "X-Flowork-Engine-ID": evil["id"]})
        assert r.status_code == 200, r.text
        replay = stolen(evil_stub)
        assert replay["x-signature"] == signed["X-Signature"]

        # Mallory replays it: every route of the victim's account refuses it ...
        attempts = [
            ("GET", "/user/engines", None),
            ("POST", f"/user/engines/{target['id']}/reset-token", None),
            ("POST", f"/engines/{target['id']}/shares", {"share_with_identifier": mallory.address,
                                                        "role": "admin"}),
            ("GET", "/auth/profile", None),
        ]
        for method, path, body in attempts:
            r = httpx.request(method, server.url(path), json=body, headers=replay)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["code"] == "signature_exposed"
        # ... and so does the proxy toward any other engine, the victim's own included.
        r = httpx.get(server.url("/workflows"),
                      headers={**replay, "X-Flowork-Engine-ID": target["id"]})
        assert r.status_code == 401 and r.json()["code"] == "signature_exposed"
        r = httpx.get(server.url("/workflows"), headers=replay)
        assert r.status_code == 401 and r.json()["code"] == "signature_exposed"

        # Toward the engine that already saw it, it still works (nothing new is exposed).
        r = httpx.get(server.url("/workflows"),
                      headers={**replay, "X-Flowork-Engine-ID": evil["id"]})
        assert r.status_code == 200, r.text

        # The victim's account is intact: a new message (a legacy message is its timestamp,
        # so one dated a second later) lists only their engine, shared with nobody.
        fresh = victim.headers(timestamp=int(time.time()) + 1)
        r = httpx.get(server.url("/user/engines"), headers=fresh)
        assert [e["id"] for e in r.json()] == [target["id"]], r.text
        r = httpx.get(server.url(f"/engines/{target['id']}/shares"), headers=fresh)
        assert r.json() == []


def test_an_owner_using_their_own_engine_spends_nothing(server, make_signer):
    owner = make_signer()
    with StubEngine() as stub:
        engine = create_engine(server, owner, "mine")
        heartbeat(server, engine, stub.url)
        signed = owner.headers()
        r = httpx.get(server.url("/workflows"), headers={**signed, "X-Flowork-Engine-ID": engine["id"]})
        assert r.status_code == 200, r.text
        r = httpx.get(server.url("/user/engines"), headers=signed)
        assert r.status_code == 200, r.text
