"""Engines plugin: the dashboard claim flow (select-for-auth, claim-token), single use under
concurrency, expiry and purge."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import falcon.testing
import pytest

from gateway_kernel import utcnow
from gateway_plugins.engines.models import EngineClaim
from gateway_plugins.engines.resources.claims import request_digest

API = "/api/v1"




def create(client, signer, name="engine"):
    r = client.simulate_post(f"{API}/user/engines", json={"name": name}, headers=signer.headers())
    assert r.status_code == 201, r.text
    return r.json


def approve(client, signer, request_id, engine_id):
    return client.simulate_post(f"{API}/user/engines/select-for-auth",
                                json={"request_id": request_id, "engine_id": engine_id},
                                headers=signer.headers())


def claim(client, service_headers, req_id):
    return client.simulate_get(f"{API}/engine/claim-token", params={"req_id": req_id},
                               headers=service_headers)


def works(client, token):
    return client.simulate_get(f"{API}/engine/get-engine-auth-info",
                               headers={"X-Engine-Token": token}).status_code == 200


def test_claim_flow_rotates_the_token_once(client, signer, service_headers):
    engine = create(client, signer)
    request_id = str(uuid.uuid4())
    r = approve(client, signer, request_id, engine["id"])
    assert r.status_code == 200
    assert r.json["status"] == "success" and r.json["message"]
    # Approval rotates nothing: the running engine keeps working.
    assert works(client, engine["raw_token"])
    r = claim(client, service_headers, request_id)
    assert r.status_code == 200
    assert r.json["status"] == "success" and r.json["engine_id"] == engine["id"]
    assert works(client, r.json["token"])
    assert not works(client, engine["raw_token"])
    again = claim(client, service_headers, request_id)
    assert (again.status_code, again.json["code"]) == (404, "expired_token")
    assert works(client, r.json["token"])


def test_unknown_request_is_pending(client, service_headers):
    r = claim(client, service_headers, str(uuid.uuid4()))
    assert (r.status_code, r.json["code"]) == (404, "authorization_pending")


@pytest.mark.parametrize("params", [{}, {"req_id": ""}, {"req_id": "not-a-uuid"}])
def test_missing_or_malformed_req_id_is_invalid_body(client, service_headers, params):
    r = client.simulate_get(f"{API}/engine/claim-token", params=params, headers=service_headers)
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")


@pytest.mark.parametrize("headers,code", [({}, "invalid_api_key"),
                                          ({"X-API-Key": "wrong"}, "invalid_api_key")])
def test_claim_needs_the_service_key(client, headers, code):
    r = client.simulate_get(f"{API}/engine/claim-token", params={"req_id": str(uuid.uuid4())},
                            headers=headers)
    assert (r.status_code, r.json["code"]) == (401, code)


def test_request_id_is_matched_in_canonical_form(client, signer, service_headers):
    engine = create(client, signer)
    request_id = str(uuid.uuid4())
    assert approve(client, signer, request_id.upper(), engine["id"]).status_code == 200
    assert claim(client, service_headers, request_id.replace("-", "")).status_code == 200


def test_expired_claim_is_expired_token_and_keeps_the_old_token(gateway, client, signer,
                                                                service_headers):
    engine = create(client, signer)
    request_id = str(uuid.uuid4())
    approve(client, signer, request_id, engine["id"])
    with gateway.using_db():
        EngineClaim.update(expires_at=utcnow() - dt.timedelta(seconds=1)).execute()
    r = claim(client, service_headers, request_id)
    assert (r.status_code, r.json["code"]) == (404, "expired_token")
    assert works(client, engine["raw_token"])


def test_claim_ttl_is_configurable(make_gateway, signer):
    gateway = make_gateway(settings={"FLOWORK_CLAIM_TTL_S": "60"})
    client = falcon.testing.TestClient(gateway)
    engine = create(client, signer)
    before = utcnow()
    approve(client, signer, str(uuid.uuid4()), engine["id"])
    after = utcnow()
    with gateway.using_db():
        expires = EngineClaim.get().expires_at
    assert before + dt.timedelta(seconds=60) <= expires <= after + dt.timedelta(seconds=60)


def test_long_expired_claims_are_purged_on_new_approvals(gateway, client, signer,
                                                         service_headers):
    engine = create(client, signer)
    old_id, recent_id = str(uuid.uuid4()), str(uuid.uuid4())
    approve(client, signer, old_id, engine["id"])
    approve(client, signer, recent_id, engine["id"])
    with gateway.using_db():
        EngineClaim.update(expires_at=utcnow() - dt.timedelta(hours=2)).where(
            EngineClaim.request_digest == request_digest(old_id, "req_id")).execute()
        EngineClaim.update(expires_at=utcnow() - dt.timedelta(minutes=1)).where(
            EngineClaim.request_digest == request_digest(recent_id, "req_id")).execute()
    approve(client, signer, str(uuid.uuid4()), engine["id"])
    with gateway.using_db():
        assert EngineClaim.select().count() == 2  # the recently expired one and the new one
    # A recently expired claim still says so; a purged one is simply unknown.
    assert claim(client, service_headers, recent_id).json["code"] == "expired_token"
    assert claim(client, service_headers, old_id).json["code"] == "authorization_pending"


def test_only_the_owner_can_approve(client, make_signer, service_headers):
    alice, mallory = make_signer(), make_signer()
    engine = create(client, alice)
    request_id = str(uuid.uuid4())
    for engine_id in (engine["id"], "not-a-uuid", str(uuid.uuid4())):
        r = approve(client, mallory, request_id, engine_id)
        assert (r.status_code, r.json["code"]) == (404, "not_found")
    assert claim(client, service_headers, request_id).json["code"] == "authorization_pending"


@pytest.mark.parametrize("body", [{}, {"request_id": "x", "engine_id": str(uuid.uuid4())},
                                  {"request_id": str(uuid.uuid4())},
                                  {"request_id": str(uuid.uuid4()), "engine_id": 7},
                                  {"request_id": 7, "engine_id": str(uuid.uuid4())}])
def test_select_for_auth_validates_its_body(client, signer, body):
    r = client.simulate_post(f"{API}/user/engines/select-for-auth", json=body,
                             headers=signer.headers())
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")


def test_reapproval_by_the_owner_repoints_others_conflict(client, make_signer,
                                                          service_headers):
    alice, mallory = make_signer(), make_signer()
    first, second = create(client, alice, "first"), create(client, alice, "second")
    request_id = str(uuid.uuid4())
    assert approve(client, alice, request_id, first["id"]).status_code == 200
    assert approve(client, alice, request_id, second["id"]).status_code == 200
    # Someone else cannot take over a request id that is already approved.
    r = approve(client, mallory, request_id, create(client, mallory)["id"])
    assert (r.status_code, r.json["code"]) == (409, "conflict")
    r = claim(client, service_headers, request_id)
    assert r.json["engine_id"] == second["id"]
    assert works(client, first["raw_token"])
    # Once claimed it cannot be approved again.
    r = approve(client, alice, request_id, first["id"])
    assert (r.status_code, r.json["code"]) == (409, "conflict")


def test_claim_works_across_instances(make_gateway, signer, service_headers):
    a = falcon.testing.TestClient(make_gateway())
    b = falcon.testing.TestClient(make_gateway())
    engine = create(a, signer)
    request_id = str(uuid.uuid4())
    approve(a, signer, request_id, engine["id"])
    r = claim(b, service_headers, request_id)
    assert r.status_code == 200
    assert works(a, r.json["token"])


def claim_concurrently(clients, service_headers, request_id, per_client):
    """``per_client`` threads per client claim ``request_id``, released together."""
    barrier = threading.Barrier(per_client * len(clients))
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def run(client):
        barrier.wait()
        r = claim(client, service_headers, request_id)
        with lock:
            results.append((r.status_code, r.json))

    threads = [threading.Thread(target=run, args=(c,)) for c in clients for _ in range(per_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_claims_give_exactly_one_token(make_gateway, signer, service_headers):
    # Two gateway instances on one database, several threads each, in a few rounds.
    clients = [falcon.testing.TestClient(make_gateway()) for _ in range(2)]
    engine = create(clients[0], signer)
    for _round in range(5):
        request_id = str(uuid.uuid4())
        assert approve(clients[0], signer, request_id, engine["id"]).status_code == 200
        results = claim_concurrently(clients, service_headers, request_id, per_client=4)
        winners = [body for status, body in results if status == 200]
        losers = [body["code"] for status, body in results if status != 200]
        assert len(winners) == 1, results
        assert losers == ["expired_token"] * (len(results) - 1), results
        assert works(clients[1], winners[0]["token"])
