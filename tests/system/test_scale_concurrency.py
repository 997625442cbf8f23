"""Races between concurrent requests, spread over two gateway instances on one database.

Threads released together by a barrier hit two in-process gateways that share one database
(SQLite with WAL and busy_timeout, or PostgreSQL with FLOWORK_TEST_POSTGRES_URL). Each race
runs for several rounds; the rules asserted are the ones clients rely on: one user per
address, one share per pair (one 201, the rest 409), one token per claim, and no 500 and no
orphan row whatever the interleaving of renames, shares, token resets and deletes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import falcon.testing
import pytest

from gateway_kernel import Account
from gateway_plugins.engines.models import Engine
from gateway_plugins.sharing.models import EngineShare
from tests.support.concurrency import race

API = "/api/v1"
ROUNDS = 4


@contextmanager
def on(gateway) -> Iterator[None]:
    with gateway.using_db(), gateway.db.connection_context():
        yield


@pytest.fixture
def pair(make_gateway) -> tuple[object, list[falcon.testing.TestClient]]:
    """Two gateway instances on one database, and a client for each."""
    first, second = make_gateway(), make_gateway()
    return first, [falcon.testing.TestClient(first), falcon.testing.TestClient(second)]


def no_server_errors(statuses: Sequence[int]) -> None:
    assert all(s < 500 for s in statuses), statuses


def test_concurrent_first_requests_of_one_address_create_one_user(pair, make_signer):
    gateway, clients = pair
    for _ in range(ROUNDS):
        signer = make_signer()
        # Different casings of one address, each with its own valid signature.
        headers = [signer.headers(), {**signer.headers(), "X-User-Address": signer.address.lower()}]
        results = race([
            partial(clients[i % 2].simulate_get, API + "/auth/profile", headers=headers[i % 2])
            for i in range(8)
        ])
        assert [r.status_code for r in results] == [200] * 8, [r.text for r in results]
        assert {r.json["user_id"] for r in results} == {signer.address}
        with on(gateway):
            assert Account.select().where(Account.address == signer.address.lower()).count() == 1


def test_concurrent_identical_shares_give_one_201_and_409s(pair, make_signer):
    gateway, clients = pair
    owner = make_signer()
    r = clients[0].simulate_post(API + "/user/engines", json={"name": "shared"},
                                 headers=owner.headers())
    assert r.status_code == 201
    engine_id = r.json["id"]
    for round_ in range(ROUNDS):
        guest = make_signer()  # unseen address: the share also races to create the user
        paths = [(f"{API}/engines/{engine_id}/shares", {"share_with_identifier": guest.address}),
                 (f"{API}/user/engines/{engine_id}/share", {"user_id": guest.address.lower()})]
        results = race([
            partial(clients[i % 2].simulate_post, paths[i % 2][0], json=paths[i % 2][1],
                    headers=owner.headers())
            for i in range(6)
        ])
        statuses = Counter(r.status_code for r in results)
        assert statuses == {201: 1, 409: 5}, (round_, [(r.status_code, r.text) for r in results])
        assert all(r.json["code"] == "conflict" for r in results if r.status_code == 409)
        with on(gateway):
            assert Account.select().where(Account.address == guest.address.lower()).count() == 1
    r = clients[1].simulate_get(f"{API}/engines/{engine_id}/shares", headers=owner.headers())
    assert len(r.json) == ROUNDS


def test_concurrent_claims_give_exactly_one_token(pair, make_signer, service_headers):
    _gateway, clients = pair
    owner = make_signer()
    r = clients[0].simulate_post(API + "/user/engines", json={"name": "claimed"},
                                 headers=owner.headers())
    engine_id, token = r.json["id"], r.json["raw_token"]
    for _ in range(ROUNDS):
        request_id = str(uuid.uuid4())
        r = clients[1].simulate_post(API + "/user/engines/select-for-auth",
                                     json={"request_id": request_id, "engine_id": engine_id},
                                     headers=owner.headers())
        assert r.status_code == 200, r.text
        results = race([
            partial(clients[i % 2].simulate_get, API + "/engine/claim-token",
                    params={"req_id": request_id}, headers=service_headers)
            for i in range(6)
        ])
        winners = [r for r in results if r.status_code == 200]
        assert len(winners) == 1, [(r.status_code, r.text) for r in results]
        assert all(r.status_code == 404 and r.json["code"] == "expired_token"
                   for r in results if r.status_code != 200)
        new_token = winners[0].json["token"]
        assert winners[0].json["engine_id"] == engine_id
        for client in clients:  # the old token is dead and the new one works, everywhere
            old = client.simulate_get(API + "/engine/get-engine-auth-info",
                                      headers={"X-Engine-Token": token})
            assert old.status_code == 401
            new = client.simulate_get(API + "/engine/get-engine-auth-info",
                                      headers={"X-Engine-Token": new_token})
            assert new.status_code == 200
        token = new_token


def test_concurrent_renames_shares_resets_and_deletes_leave_a_consistent_state(pair, make_signer):
    gateway, clients = pair
    owner = make_signer()
    guests = [make_signer() for _ in range(3)]
    for _ in range(ROUNDS):
        r = clients[0].simulate_post(API + "/user/engines", json={"name": "doomed"},
                                     headers=owner.headers())
        engine_id = r.json["id"]
        base = f"{API}/user/engines/{engine_id}"
        calls: list[Callable[[], falcon.testing.Result]] = []
        for i in range(4):
            calls.append(partial(clients[i % 2].simulate_put, base + "/update-name",
                                 json={"name": f"name {i}"}, headers=owner.headers()))
        for i, guest in enumerate(guests):
            calls.append(partial(clients[i % 2].simulate_post, f"{API}/engines/{engine_id}/shares",
                                 json={"share_with_identifier": guest.address},
                                 headers=owner.headers()))
        calls.append(partial(clients[1].simulate_post, base + "/reset-token",
                             headers=owner.headers()))
        calls.append(partial(clients[0].simulate_delete, base, headers=owner.headers()))
        calls.append(partial(clients[1].simulate_delete, base, headers=owner.headers()))
        results = race(calls)
        statuses = [r.status_code for r in results]
        no_server_errors(statuses)
        assert set(statuses) <= {200, 201, 404}, [(r.status_code, r.text) for r in results]
        deletes = statuses[-2:]
        assert sorted(deletes) == [200, 404], deletes  # exactly one delete wins

        # Gone everywhere, and nothing left behind.
        for client in clients:
            r = client.simulate_get(API + "/user/engines", headers=owner.headers())
            assert engine_id not in [e["id"] for e in r.json]
            r = client.simulate_get(f"{API}/engines/{engine_id}/shares", headers=owner.headers())
            assert r.status_code == 404
            for guest in guests:
                r = client.simulate_get(API + "/user/shared-engines", headers=guest.headers())
                assert engine_id not in [e["id"] for e in r.json]
        with on(gateway):
            assert not Engine.select().where(Engine.id == engine_id).exists()
            assert EngineShare.select().where(EngineShare.engine == engine_id).count() == 0


def test_concurrent_renames_from_two_instances_end_on_one_of_the_names(pair, make_signer):
    _gateway, clients = pair
    owner = make_signer()
    r = clients[0].simulate_post(API + "/user/engines", json={"name": "start"},
                                 headers=owner.headers())
    engine_id = r.json["id"]
    names = [f"Engine {i}" for i in range(8)]
    results = race([
        partial(clients[i % 2].simulate_put, f"{API}/user/engines/{engine_id}/update-name",
                json={"name": names[i]}, headers=owner.headers())
        for i in range(len(names))
    ])
    assert [r.status_code for r in results] == [200] * len(names)
    listed = [clients[i].simulate_get(API + "/user/engines", headers=owner.headers()).json
              for i in (0, 1)]
    assert listed[0] == listed[1]
    assert len(listed[0]) == 1 and listed[0][0]["name"] in names


def test_share_racing_the_engine_delete_is_404_not_conflict(gateway, make_signer):
    """The race above, made deterministic: the engine is deleted (by another request) after
    the share route checked ownership and before it inserts the share. The foreign key then
    refuses the insert; that is a vanished engine (404), not an existing share (409)."""
    client = falcon.testing.TestClient(gateway)
    owner, guest = make_signer(), make_signer()
    r = client.simulate_post(API + "/user/engines", json={"name": "vanishing"},
                             headers=owner.headers())
    engine_id = r.json["id"]
    find_account = gateway.find_account

    def find_account_while_engine_is_deleted(identifier: str):
        account = find_account(identifier)
        Engine.delete().where(Engine.id == engine_id).execute()  # the concurrent DELETE
        return account

    gateway.find_account = find_account_while_engine_is_deleted
    try:
        r = client.simulate_post(f"{API}/engines/{engine_id}/shares",
                                 json={"share_with_identifier": guest.address},
                                 headers=owner.headers())
    finally:
        del gateway.find_account
    assert r.status_code == 404, r.text
    assert r.json["code"] == "not_found"


def test_concurrent_disable_and_enable_of_a_component_never_fail(pair, service_headers):
    """Kill switch: PUT (disable) and DELETE (enable) of one component racing from two
    instances answer 200 or 404, and the listing agrees with the last answer."""
    _gateway, clients = pair
    failures = []
    for round_ in range(ROUNDS * 10):
        path = f"{API}/system/disabled-components/comp_{round_ % 3}"
        results = race([
            partial(clients[0].simulate_put, path, json={"reason": "a"}, headers=service_headers),
            partial(clients[1].simulate_delete, path, headers=service_headers),
            partial(clients[1].simulate_put, path, json={"reason": "b"}, headers=service_headers),
            partial(clients[0].simulate_delete, path, headers=service_headers),
        ])
        failures += [(r.status_code, r.text[:120]) for r in results if r.status_code not in (200, 404)]
        assert all(r.json["component_id"] == f"comp_{round_ % 3}"
                   for r in results[::2] if r.status_code == 200)
    assert not failures, failures[:3]
    listed = clients[1].simulate_get(API + "/system/disabled-components", headers=service_headers)
    assert listed.status_code == 200 and set(listed.json) <= {"comp_0", "comp_1", "comp_2"}


def test_concurrent_link_creation_gives_distinct_default_names(pair, make_signer):
    """Four links of one workflow created at once from two instances: all 201, named
    "Link 1" … "Link 4" (API.md: N is the number of links once this one is added)."""
    _gateway, clients = pair
    owner = make_signer()
    for round_ in range(ROUNDS):
        path = f"{API}/workflows/flow-{round_}/shares"
        results = race([partial(clients[i % 2].simulate_post, path, json={},
                                headers=owner.headers()) for i in range(4)])
        assert [r.status_code for r in results] == [201] * 4, [r.text for r in results]
        names = sorted(r.json["link_name"] for r in results)
        assert names == ["Link 1", "Link 2", "Link 3", "Link 4"], names


def test_a_double_clicked_approval_racing_itself_is_accepted_twice(pair, make_signer,
                                                                   service_headers):
    """select-for-auth sent twice at once (a double click, two instances): both 200, as a
    sequential second approval is, and the dashboard then claims one token."""
    _gateway, clients = pair
    owner = make_signer()
    r = clients[0].simulate_post(API + "/user/engines", json={"name": "dashboard"},
                                 headers=owner.headers())
    engine_id = r.json["id"]
    for _ in range(ROUNDS):
        request_id = str(uuid.uuid4())
        results = race([partial(clients[i % 2].simulate_post, API + "/user/engines/select-for-auth",
                                json={"request_id": request_id, "engine_id": engine_id},
                                headers=owner.headers()) for i in range(2)])
        assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
        r = clients[1].simulate_get(API + "/engine/claim-token", params={"req_id": request_id},
                                    headers=service_headers)
        assert r.status_code == 200 and r.json["engine_id"] == engine_id
