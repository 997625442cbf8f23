"""Engine shares through the HTTP API: seed routes, GUI aliases, roles, ownership, cascades."""

from __future__ import annotations

import datetime as dt
import threading

import falcon.testing
import pytest

from gateway_kernel import Account
from gateway_kernel.db import utcnow
from gateway_plugins.engines.models import Engine
from gateway_plugins.sharing.models import EngineShare

API = "/api/v1"


class Env:
    """A gateway, its client and helpers to make users' engines."""

    def __init__(self, gateway, make_signer) -> None:
        self.gateway = gateway
        self.client = falcon.testing.TestClient(gateway)
        self.make_signer = make_signer

    def run(self, fn):
        with self.gateway.using_db():
            return fn()

    def engine(self, owner, name: str = "engine") -> str:
        return self.engine_with_token(owner, name)[0]

    def engine_with_token(self, owner, name: str = "engine") -> tuple[str, str]:
        r = self.post("/user/engines", owner, {"name": name})
        assert r.status_code == 201, r.text
        return r.json["id"], r.json["raw_token"]

    def get(self, path: str, user=None):
        return self.client.simulate_get(API + path, headers=user.headers() if user else None)

    def post(self, path: str, user=None, body=None, **kw):
        return self.client.simulate_post(API + path, headers=user.headers() if user else None,
                                         json=body, **kw)

    def delete(self, path: str, user=None):
        return self.client.simulate_delete(API + path,
                                           headers=user.headers() if user else None)

    def count(self, model) -> int:
        return self.run(lambda: model.select().count())


@pytest.fixture
def env(make_gateway, make_signer) -> Env:
    return Env(make_gateway(), make_signer)


@pytest.fixture
def users(make_signer):
    """alice owns engines, bob is a guest, mallory is a stranger."""
    return make_signer(), make_signer(), make_signer()


def share(env: Env, owner, engine_id: str, identifier: str, **extra):
    return env.post(f"/engines/{engine_id}/shares", owner,
                    {"share_with_identifier": identifier, **extra})


# -- create --------------------------------------------------------------------------------


def test_share_with_unseen_address_creates_user_and_lists_share(env, users) -> None:
    alice, bob, _ = users
    engine_id = env.engine(alice)
    r = share(env, alice, engine_id, bob.address.lower())
    assert r.status_code == 201, r.text
    body = r.json
    assert set(body) == {"message", "share_id", "shared_with"}
    assert body["shared_with"]["user_id"] == bob.address
    assert body["shared_with"]["public_address"] == bob.address
    assert body["shared_with"]["role"] == "runner"
    assert set(body["shared_with"]) == {"user_id", "public_address", "username", "email",
                                        "role", "shared_at"}

    listed = env.get(f"/engines/{engine_id}/shares", alice)
    assert listed.status_code == 200
    assert listed.json == [body["shared_with"]]

    # bob signs in later and finds the engine shared with him, with its owner
    mine = env.get("/user/shared-engines", bob)
    assert mine.status_code == 200
    assert len(mine.json) == 1
    entry = mine.json[0]
    assert entry["id"] == engine_id
    assert entry["name"] == "engine"
    assert entry["status"] == "offline" and entry["last_seen"] is None
    assert entry["owner"]["user_id"] == alice.address
    assert entry["owner"]["public_address"] == alice.address
    assert "username" in entry["owner"]


@pytest.mark.parametrize("role", ["reader", "runner", "admin"])
def test_share_roles(env, users, role) -> None:
    alice, bob, _ = users
    engine_id = env.engine(alice)
    r = share(env, alice, engine_id, bob.address, role=role)
    assert r.status_code == 201
    assert r.json["shared_with"]["role"] == role
    assert env.get(f"/engines/{engine_id}/shares", alice).json[0]["role"] == role


def test_share_by_username_is_case_insensitive(env, users) -> None:
    alice, bob, _ = users
    engine_id = env.engine(alice)
    env.get("/user/shared-engines", bob)  # bob signs in once
    env.run(lambda: Account.update(username="BobTheBuilder")
            .where(Account.address == bob.address.lower()).execute())
    r = share(env, alice, engine_id, "bobthebuilder")
    assert r.status_code == 201, r.text
    assert r.json["shared_with"]["user_id"] == bob.address
    assert r.json["shared_with"]["username"] == "BobTheBuilder"


def test_share_errors(env, users) -> None:
    alice, bob, _ = users
    engine_id = env.engine(alice)
    path = f"/engines/{engine_id}/shares"

    for nobody in ("nobody-by-this-name", "nul\x00name"):
        r = share(env, alice, engine_id, nobody)
        assert (r.status_code, r.json["code"]) == (404, "user_not_found")
    for me in (alice.address, alice.address.lower()):
        r = share(env, alice, engine_id, me)
        assert (r.status_code, r.json["code"]) == (400, "cannot_share_with_self")
    for bad in ({}, {"share_with_identifier": 5}, {"share_with_identifier": ""},
                {"share_with_identifier": bob.address, "role": "owner"},
                {"share_with_identifier": bob.address, "role": 1}):
        r = env.post(path, alice, bad)
        assert (r.status_code, r.json["code"]) == (400, "invalid_body"), bad
    r = env.client.simulate_post(API + path, headers=alice.headers(), body="{not json")
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")
    r = env.client.simulate_post(API + path, headers=alice.headers(), json=["x"])
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")
    r = env.client.simulate_post(API + path, headers=alice.headers(),
                                 body='{"share_with_identifier": "' + "a" * 2_000_000 + '"}')
    assert (r.status_code, r.json["code"]) == (413, "body_too_large")
    assert env.count(EngineShare) == 0


def test_share_with_bad_checksum_is_invalid_identifier(env, users) -> None:
    alice, bob, _ = users
    engine_id = env.engine(alice)
    mixed = bob.address
    # flip the case of one letter: still mixed case, checksum now wrong
    i = next(i for i, ch in enumerate(mixed) if i > 1 and ch.isalpha())
    broken = mixed[:i] + mixed[i].swapcase() + mixed[i + 1:]
    r = share(env, alice, engine_id, broken)
    assert (r.status_code, r.json["code"]) == (400, "invalid_identifier")


def test_duplicate_share_is_conflict(env, users) -> None:
    alice, bob, _ = users
    engine_id = env.engine(alice)
    assert share(env, alice, engine_id, bob.address).status_code == 201
    r = share(env, alice, engine_id, bob.address.lower(), role="admin")
    assert (r.status_code, r.json["code"]) == (409, "conflict")
    assert [s["role"] for s in env.get(f"/engines/{engine_id}/shares", alice).json] == ["runner"]


def test_concurrent_duplicate_shares_one_wins(env, users) -> None:
    alice, bob, _ = users
    engine_id = env.engine(alice)
    env.get("/user/shared-engines", bob)
    headers = [alice.headers() for _ in range(4)]
    barrier = threading.Barrier(len(headers))
    statuses: list[int] = []

    def attempt(h: dict[str, str]) -> None:
        client = falcon.testing.TestClient(env.gateway)
        barrier.wait()
        r = client.simulate_post(f"{API}/engines/{engine_id}/shares", headers=h,
                                 json={"share_with_identifier": bob.address})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt, args=(h,)) for h in headers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 409, 409, 409]
    assert env.count(EngineShare) == 1


# -- ownership -----------------------------------------------------------------------------


def test_stranger_cannot_touch_anothers_engine_shares(env, users) -> None:
    alice, bob, mallory = users
    engine_id = env.engine(alice)
    assert share(env, alice, engine_id, bob.address).status_code == 201
    # the guest is not the owner either
    for user in (mallory, bob):
        attempts = [
            env.get(f"/engines/{engine_id}/shares", user),
            share(env, user, engine_id, mallory.address),
            env.delete(f"/engines/{engine_id}/shares/{bob.address}", user),
            env.get(f"/user/engines/{engine_id}/shares", user),
            env.post(f"/user/engines/{engine_id}/share", user, {"user_id": mallory.address}),
            env.delete(f"/user/engines/{engine_id}/shares/{bob.address}", user),
            env.post(f"/user/engines/{engine_id}/shares/delete", user, {"user_id": bob.address}),
        ]
        for r in attempts:
            assert (r.status_code, r.json["code"]) == (404, "not_found")
    assert [s["user_id"] for s in env.get(f"/engines/{engine_id}/shares", alice).json] == [
        bob.address]
    assert env.get("/user/shared-engines", mallory).json == []


@pytest.mark.parametrize("engine_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000",
                                       "x" * 300])
def test_malformed_or_unknown_engine_ids_are_not_found(env, users, engine_id) -> None:
    alice, bob, _ = users
    for r in (
        env.get(f"/engines/{engine_id}/shares", alice),
        share(env, alice, engine_id, bob.address),
        env.delete(f"/engines/{engine_id}/shares/{bob.address}", alice),
        env.get(f"/user/engines/{engine_id}/shares", alice),
        env.post(f"/user/engines/{engine_id}/share", alice, {"user_id": bob.address}),
        env.delete(f"/user/engines/{engine_id}/shares/{bob.address}", alice),
        env.post(f"/user/engines/{engine_id}/shares/delete", alice, {"user_id": bob.address}),
    ):
        assert (r.status_code, r.json["code"]) == (404, "not_found")


def test_routes_need_a_signed_in_user(env, users) -> None:
    alice, bob, _ = users
    engine_id = env.engine(alice)
    for r in (
        env.get(f"/engines/{engine_id}/shares"),
        share(env, None, engine_id, bob.address),
        env.delete(f"/engines/{engine_id}/shares/{bob.address}"),
        env.get("/user/shared-engines"),
        env.get(f"/user/engines/{engine_id}/shares"),
        env.post(f"/user/engines/{engine_id}/share", None, {"user_id": bob.address}),
        env.post(f"/user/engines/{engine_id}/shares/delete", None, {"user_id": bob.address}),
    ):
        assert r.status_code == 401
        assert set(r.json) == {"error", "code"}
    assert env.count(EngineShare) == 0


def test_unserved_methods_are_405(env, users) -> None:
    alice, _, _ = users
    engine_id = env.engine(alice)
    for method, path in (
        ("PUT", f"/engines/{engine_id}/shares"),
        ("GET", f"/engines/{engine_id}/shares/{alice.address}"),
        ("GET", f"/user/engines/{engine_id}/share"),
        ("POST", f"/user/engines/{engine_id}/shares"),
        ("GET", f"/user/engines/{engine_id}/shares/delete"),
        ("POST", "/user/shared-engines"),
    ):
        r = env.client.simulate_request(method, API + path, headers=alice.headers())
        assert (r.status_code, r.json["code"]) == (405, "method_not_allowed"), (method, path)
        assert r.headers.get("Allow")


# -- delete --------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [str, str.lower, str.upper])
def test_delete_share_by_address_in_any_case(env, users, form) -> None:
    alice, bob, _ = users
    engine_id = env.engine(alice)
    assert share(env, alice, engine_id, bob.address).status_code == 201
    address = bob.address if form is str else "0x" + form(bob.address[2:])
    r = env.delete(f"/engines/{engine_id}/shares/{address}", alice)
    assert r.status_code == 200, r.text
    assert set(r.json) == {"message"}
    assert env.get(f"/engines/{engine_id}/shares", alice).json == []
    assert env.get("/user/shared-engines", bob).json == []
    again = env.delete(f"/engines/{engine_id}/shares/{address}", alice)
    assert (again.status_code, again.json["code"]) == (404, "not_found")


def test_delete_share_of_user_not_shared_with_is_not_found(env, users) -> None:
    alice, bob, mallory = users
    engine_id = env.engine(alice)
    other_engine = env.engine(alice, "other")
    assert share(env, alice, other_engine, bob.address).status_code == 201
    env.get("/user/shared-engines", mallory)
    for who in (bob.address, mallory.address, "someone", "0x" + "0" * 40, "nul%00", "x" * 300):
        r = env.delete(f"/engines/{engine_id}/shares/{who}", alice)
        assert (r.status_code, r.json["code"]) == (404, "not_found"), who
    assert len(env.get(f"/engines/{other_engine}/shares", alice).json) == 1


# -- compatibility aliases -----------------------------------------------------------------


def test_gui_aliases_behave_like_seed_routes(env, users) -> None:
    alice, bob, mallory = users
    engine_id = env.engine(alice)
    base = f"/user/engines/{engine_id}"

    r = env.post(f"{base}/share", alice, {"user_id": bob.address, "role": "reader"})
    assert r.status_code == 201, r.text
    assert set(r.json) == {"message", "share_id", "shared_with"}
    assert r.json["shared_with"]["role"] == "reader"
    r = env.post(f"{base}/share", alice, {"user_id": mallory.address.lower()})
    assert r.status_code == 201
    assert r.json["shared_with"]["role"] == "runner"

    alias_list = env.get(f"{base}/shares", alice)
    assert alias_list.status_code == 200
    assert alias_list.json == env.get(f"/engines/{engine_id}/shares", alice).json
    assert [s["user_id"] for s in alias_list.json] == [bob.address, mallory.address]

    # same errors as the seed route
    r = env.post(f"{base}/share", alice, {"user_id": bob.address})
    assert (r.status_code, r.json["code"]) == (409, "conflict")
    r = env.post(f"{base}/share", alice, {"user_id": alice.address})
    assert (r.status_code, r.json["code"]) == (400, "cannot_share_with_self")
    r = env.post(f"{base}/share", alice, {"user_id": "no-such-user"})
    assert (r.status_code, r.json["code"]) == (404, "user_not_found")
    r = env.post(f"{base}/share", alice, {"share_with_identifier": bob.address})
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")

    r = env.delete(f"{base}/shares/{bob.address}", alice)
    assert r.status_code == 200 and set(r.json) == {"message"}
    r = env.post(f"{base}/shares/delete", alice, {"user_id": mallory.address})
    assert r.status_code == 200 and set(r.json) == {"message"}
    assert env.get(f"{base}/shares", alice).json == []
    r = env.post(f"{base}/shares/delete", alice, {"user_id": mallory.address})
    assert (r.status_code, r.json["code"]) == (404, "not_found")
    r = env.post(f"{base}/shares/delete", alice, {})
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")


# -- engines shared with me ----------------------------------------------------------------


def test_shared_engines_lists_status_and_sorts_by_name(make_gateway, make_signer) -> None:
    env = Env(make_gateway(settings={"FLOWORK_ENGINE_ONLINE_S": "60"}), make_signer)
    alice, carol, bob = make_signer(), make_signer(), make_signer()
    zeta = env.engine(alice, "zeta")
    alpha = env.engine(carol, "Alpha")
    middle = env.engine(alice, "beta")
    private = env.engine(alice, "not shared")
    for owner, engine_id in ((alice, zeta), (carol, alpha), (alice, middle)):
        assert share(env, owner, engine_id, bob.address).status_code == 201
    now = utcnow()
    env.run(lambda: Engine.update(last_seen=now).where(Engine.id == zeta).execute())
    env.run(lambda: Engine.update(last_seen=now - dt.timedelta(seconds=90))
            .where(Engine.id == middle).execute())

    listed = env.get("/user/shared-engines", bob).json
    assert [e["id"] for e in listed] == [alpha, middle, zeta]
    assert private not in {e["id"] for e in listed}
    by_id = {e["id"]: e for e in listed}
    assert by_id[zeta]["status"] == "online"
    assert by_id[middle]["status"] == "offline"  # 90 s > the configured 60 s window
    assert by_id[middle]["last_seen"] is not None
    assert by_id[alpha]["owner"]["user_id"] == carol.address
    assert by_id[zeta]["owner"]["user_id"] == alice.address
    assert env.get("/user/shared-engines", alice).json == []


# -- contract hooks: what get-engine-auth-info and the proxy see ---------------------------


def auth_info(env: Env, engine_token: str):
    r = env.client.simulate_get(f"{API}/engine/get-engine-auth-info",
                                headers={"X-Engine-Token": engine_token})
    assert r.status_code == 200, r.text
    return r.json


def proxy_decision(env: Env, user, engine_id: str) -> tuple[int, str]:
    """What the authenticated proxy answers ``user`` asking for ``engine_id``."""
    headers = {**user.headers(), "X-Flowork-Engine-ID": engine_id}
    r = env.client.simulate_get(f"{API}/workflows", headers=headers)
    return r.status_code, r.json["code"]


def test_shares_reach_auth_info_and_proxy_and_revocation_is_immediate(env, users) -> None:
    alice, bob, mallory = users
    engine_id, engine_token = env.engine_with_token(alice)
    assert share(env, alice, engine_id, bob.address, role="admin").status_code == 201
    assert share(env, alice, engine_id, mallory.address, role="reader").status_code == 201

    info = auth_info(env, engine_token)
    assert info["roles"] == {alice.address.lower(): "owner", bob.address.lower(): "admin",
                             mallory.address.lower(): "reader"}
    assert sorted(info["authorized_addresses"]) == sorted(info["roles"])
    # the engine never sent a heartbeat: a guest may use it (it is offline), a stranger not
    assert proxy_decision(env, bob, engine_id) == (503, "engine_offline")
    stranger = env.make_signer()
    assert proxy_decision(env, stranger, engine_id) == (404, "not_found")

    assert env.delete(f"/engines/{engine_id}/shares/{bob.address}", alice).status_code == 200
    info = auth_info(env, engine_token)
    assert bob.address.lower() not in info["authorized_addresses"]
    assert info["roles"] == {alice.address.lower(): "owner", mallory.address.lower(): "reader"}
    assert proxy_decision(env, bob, engine_id) == (404, "not_found")
    assert proxy_decision(env, mallory, engine_id) == (503, "engine_offline")


def test_contract_hooks(env, users) -> None:
    alice, bob, mallory = users
    engine_id = env.engine(alice)
    hook = env.gateway.hook
    assert share(env, alice, engine_id, bob.address, role="admin").status_code == 201
    env.get("/user/shared-engines", mallory)
    bob_id, mallory_id = env.run(lambda: [
        Account.get(Account.address == u.address.lower()).id for u in (bob, mallory)])

    guests = env.run(lambda: hook.flowork_engine_guests(engine_id=engine_id))
    assert [[(g.account.public_address, g.role) for g in part] for part in guests] == [
        [(bob.address, "admin")]]
    assert env.run(lambda: hook.flowork_engine_guest_role(engine_id=engine_id,
                                                          account_id=bob_id)) == "admin"
    assert env.run(lambda: hook.flowork_engine_guest_role(engine_id=engine_id,
                                                          account_id=mallory_id)) is None
    assert env.run(lambda: hook.flowork_engines_shared_with(account_id=bob_id)) == [[engine_id]]
    assert env.run(lambda: hook.flowork_engines_shared_with(account_id=mallory_id)) == [[]]

    assert env.delete(f"/engines/{engine_id}/shares/{bob.address}", alice).status_code == 200
    assert env.run(lambda: hook.flowork_engine_guests(engine_id=engine_id)) == [[]]
    assert env.run(lambda: hook.flowork_engine_guest_role(engine_id=engine_id,
                                                          account_id=bob_id)) is None
    assert env.run(lambda: hook.flowork_engines_shared_with(account_id=bob_id)) == [[]]


# -- no orphans ----------------------------------------------------------------------------


def test_deleting_engine_or_account_removes_its_shares(env, users) -> None:
    alice, bob, mallory = users
    kept = env.engine(alice, "kept")
    doomed = env.engine(alice, "doomed")
    for engine_id in (kept, doomed):
        assert share(env, alice, engine_id, bob.address).status_code == 201
    assert share(env, alice, kept, mallory.address).status_code == 201
    assert env.count(EngineShare) == 3

    assert env.delete(f"/user/engines/{doomed}", alice).status_code == 200
    assert env.count(EngineShare) == 2
    assert [e["id"] for e in env.get("/user/shared-engines", bob).json] == [kept]

    env.run(lambda: Account.delete().where(Account.address == mallory.address.lower()).execute())
    assert env.count(EngineShare) == 1
    assert [s["user_id"] for s in env.get(f"/engines/{kept}/shares", alice).json] == [
        bob.address]


def test_other_plugins_use_only_the_published_api_of_engines() -> None:
    """Plugins reach engines through hooks or gateway_plugins.engines.api, never its internal
    modules, and never read its online window setting (they ask engines' presence rule)."""
    import re
    from pathlib import Path

    plugins = Path(__file__).resolve().parent.parent / "plugins"
    for path in plugins.rglob("*.py"):
        if path.relative_to(plugins).parts[0] == "engines":
            continue
        text = path.read_text(encoding="utf-8")
        used = set(re.findall(r"gateway_plugins\.engines(?:\.\w+)*", text))
        assert used <= {"gateway_plugins.engines.api"}, (path, used)
        assert "FLOWORK_ENGINE_ONLINE_S" not in text, path
