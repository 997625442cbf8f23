"""Workflow share links through the HTTP API: create, list, update, delete, resolve."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import falcon.testing
import pytest

from gateway_kernel import Account
from gateway_kernel.db import utcnow
from gateway_plugins.sharing.models import WorkflowLink

API = "/api/v1"
LINK_KEYS = {"share_id", "share_token", "share_url", "permission_level", "link_name",
             "created_at", "expires_at"}
RESOLVE_KEYS = {"permission_level", "workflow_name", "preset_name", "owner_username",
                "owner_id", "link_name"}


class Env:
    def __init__(self, gateway) -> None:
        self.gateway = gateway
        self.client = falcon.testing.TestClient(gateway)

    def run(self, fn):
        with self.gateway.using_db():
            return fn()

    def call(self, method: str, path: str, user=None, body=None):
        headers = user.headers() if user else None
        return self.client.simulate_request(method, API + path, headers=headers, json=body)

    def links_path(self, preset: str) -> str:
        return f"/workflows/{quote(preset, safe='')}/shares"

    def create(self, user, preset: str = "My Flow", **body):
        return self.call("POST", self.links_path(preset), user, body)

    def list(self, user, preset: str = "My Flow"):
        return self.call("GET", self.links_path(preset), user)

    def resolve(self, token: str):
        return self.client.simulate_get(f"{API}/workflow-shares/resolve/{token}")

    def count(self) -> int:
        return self.run(lambda: WorkflowLink.select().count())


@pytest.fixture
def env(make_gateway) -> Env:
    return Env(make_gateway())


@pytest.fixture
def users(make_signer):
    """alice owns workflows, mallory is a stranger."""
    return make_signer(), make_signer()


def future(seconds: int = 3600) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


# -- create and list -----------------------------------------------------------------------


def test_create_link_defaults_and_resolve(env, users) -> None:
    alice, _ = users
    r = env.create(alice)
    assert r.status_code == 201, r.text
    link = r.json
    assert set(link) == LINK_KEYS | {"message"}
    assert link["permission_level"] == "view"
    assert link["link_name"] == "Link 1"
    assert link["expires_at"] is None
    assert link["created_at"]
    token = link["share_token"]
    assert len(token) >= 22  # at least 128 bits of token_urlsafe
    assert link["share_url"] == f"https://flowork.cloud/shared/{token}"

    resolved = env.resolve(token)  # public: no auth headers
    assert resolved.status_code == 200, resolved.text
    assert resolved.json == {
        "permission_level": "view",
        "workflow_name": "My Flow",
        "preset_name": "My Flow",
        "owner_username": resolved.json["owner_username"],
        "owner_id": alice.address,
        "link_name": "Link 1",
    }
    assert set(resolved.json) == RESOLVE_KEYS
    assert resolved.headers["Cache-Control"] == "no-store"


def test_links_numbered_and_listed_newest_first(env, users) -> None:
    alice, _ = users
    made = []
    for body in ({}, {"link_name": "For Bob", "permission_level": "view-run"},
                 {"permission_level": "view-edit-run", "link_name": "   "}):
        r = env.create(alice, **body)
        assert r.status_code == 201, r.text
        made.append(r.json)
    assert [m["link_name"] for m in made] == ["Link 1", "For Bob", "Link 3"]
    assert [m["permission_level"] for m in made] == ["view", "view-run", "view-edit-run"]
    assert len({m["share_token"] for m in made}) == 3

    listed = env.list(alice)
    assert listed.status_code == 200
    assert [x["share_id"] for x in listed.json] == [m["share_id"] for m in reversed(made)]
    assert all(set(x) == LINK_KEYS for x in listed.json)
    assert listed.json[-1] == {k: v for k, v in made[0].items() if k != "message"}

    # same creation time: reverse creation order
    same = utcnow().replace(microsecond=0)
    env.run(lambda: WorkflowLink.update(created_at=same).execute())
    tied = env.list(alice).json
    assert [x["share_id"] for x in tied] == [m["share_id"] for m in reversed(made)]


def test_workflows_are_per_owner_and_per_preset(env, users) -> None:
    alice, mallory = users
    assert env.create(alice, "Flow").status_code == 201
    assert env.create(alice, "Flow").status_code == 201
    assert env.create(alice, "flow").status_code == 201  # a different preset: stored as given
    r = env.create(mallory, "Flow")
    assert r.status_code == 201
    assert r.json["link_name"] == "Link 1"
    assert len(env.list(alice, "Flow").json) == 2
    assert len(env.list(alice, "flow").json) == 1
    assert [x["share_id"] for x in env.list(mallory, "Flow").json] == [r.json["share_id"]]
    assert env.list(alice, "Other").json == []


def test_expiry(env, users) -> None:
    alice, _ = users
    r = env.create(alice, expires_at=future())
    assert r.status_code == 201, r.text
    assert r.json["expires_at"].endswith("Z")
    token = r.json["share_token"]
    assert env.resolve(token).status_code == 200

    # naive times are UTC
    naive = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(tzinfo=None).isoformat()
    assert env.create(alice, expires_at=naive).status_code == 201
    assert env.create(alice, expires_at=None).json["expires_at"] is None

    for bad in (future(-60), "2001-01-01T00:00:00Z", "tomorrow", "", 12345, "9" * 100):
        r = env.create(alice, expires_at=bad)
        assert (r.status_code, r.json["code"]) == (400, "invalid_body"), bad

    # the link expires: it resolves like one that never existed, and still lists for its owner
    env.run(lambda: WorkflowLink.update(expires_at=utcnow() - dt.timedelta(seconds=1))
            .where(WorkflowLink.token == token).execute())
    r = env.resolve(token)
    assert (r.status_code, r.json["code"]) == (404, "invalid_share_token")
    assert token in {x["share_token"] for x in env.list(alice).json}


def test_create_errors(env, users) -> None:
    alice, _ = users
    path = env.links_path("My Flow")
    for body in ({"permission_level": "admin"}, {"permission_level": 3},
                 {"link_name": 5}, {"link_name": "x" * 101}, {"link_name": "a\nb"}):
        r = env.call("POST", path, alice, body)
        assert (r.status_code, r.json["code"]) == (400, "invalid_body"), body
    r = env.client.simulate_post(API + path, headers=alice.headers(), body="{oops")
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")
    r = env.client.simulate_post(API + path, headers=alice.headers(), json=[1])
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")
    r = env.client.simulate_post(API + path, headers=alice.headers(),
                                 body='{"link_name": "' + "a" * 2_000_000 + '"}')
    assert (r.status_code, r.json["code"]) == (413, "body_too_large")
    assert env.count() == 0
    # an empty body is all defaults
    r = env.client.simulate_post(API + path, headers=alice.headers())
    assert r.status_code == 201 and r.json["permission_level"] == "view"


@pytest.mark.parametrize("name", ["a", "x" * 128, "Mein Ablauf ü 🚀", " padded ", "a.b-c_d (2)"])
def test_preset_names_accepted_and_stored_as_given(env, users, name) -> None:
    alice, _ = users
    r = env.create(alice, name)
    assert r.status_code == 201, r.text
    assert env.resolve(r.json["share_token"]).json["preset_name"] == name
    assert len(env.list(alice, name).json) == 1


@pytest.mark.parametrize("name", ["x" * 129, "   ", "a\x00b", "a\x01b", "tab\there", "a\\b", "zw\u200bj"])
def test_invalid_preset_names(env, users, name) -> None:
    alice, _ = users
    for r in (env.create(alice, name), env.list(alice, name)):
        assert (r.status_code, r.json["code"]) == (400, "invalid_preset_name")
    assert env.count() == 0


def test_share_base_url_setting(make_gateway, make_signer) -> None:
    env = Env(make_gateway(settings={"FLOWORK_SHARE_BASE_URL": "https://example.test/s/"}))
    r = env.create(make_signer())
    assert r.json["share_url"] == "https://example.test/s/" + r.json["share_token"]


# -- update and delete ---------------------------------------------------------------------


def test_update_link(env, users) -> None:
    alice, _ = users
    link = env.create(alice).json
    path = f"/workflow-shares/{link['share_id']}"
    r = env.call("PUT", path, alice, {"permission_level": "view-edit-run"})
    assert r.status_code == 200, r.text
    assert r.json == {"message": r.json["message"], "share_id": link["share_id"],
                      "permission_level": "view-edit-run"}
    assert env.resolve(link["share_token"]).json["permission_level"] == "view-edit-run"

    r = env.call("PUT", path, alice, {"permission_level": "view-run", "link_name": "Renamed",
                                      "expires_at": future()})
    assert r.status_code == 200
    listed = env.list(alice).json[0]
    assert (listed["link_name"], listed["permission_level"]) == ("Renamed", "view-run")
    assert listed["expires_at"] is not None
    assert env.call("PUT", path, alice, {"permission_level": "view",
                                         "expires_at": None}).status_code == 200
    assert env.list(alice).json[0]["expires_at"] is None

    for body in ({}, {"permission_level": "owner"}, {"permission_level": "view",
                                                     "expires_at": future(-10)}):
        r = env.call("PUT", path, alice, body)
        assert (r.status_code, r.json["code"]) == (400, "invalid_body"), body
    assert env.list(alice).json[0]["permission_level"] == "view"


def test_delete_link_leaves_nothing(env, users) -> None:
    alice, _ = users
    keep = env.create(alice).json
    link = env.create(alice).json
    r = env.call("DELETE", f"/workflow-shares/{link['share_id']}", alice)
    assert r.status_code == 200, r.text
    assert set(r.json) == {"status", "message"} and r.json["status"] == "success"
    assert env.count() == 1
    r = env.resolve(link["share_token"])
    assert (r.status_code, r.json["code"]) == (404, "invalid_share_token")
    assert [x["share_id"] for x in env.list(alice).json] == [keep["share_id"]]
    r = env.call("DELETE", f"/workflow-shares/{link['share_id']}", alice)
    assert (r.status_code, r.json["code"]) == (404, "not_found")


def test_stranger_cannot_touch_anothers_links(env, users) -> None:
    alice, mallory = users
    link = env.create(alice, "Secret").json
    path = f"/workflow-shares/{link['share_id']}"
    r = env.call("PUT", path, mallory, {"permission_level": "view-edit-run"})
    assert (r.status_code, r.json["code"]) == (404, "not_found")
    r = env.call("DELETE", path, mallory)
    assert (r.status_code, r.json["code"]) == (404, "not_found")
    assert env.list(mallory, "Secret").json == []
    # mallory's own link to a preset of the same name is hers, not alice's
    assert env.create(mallory, "Secret").json["link_name"] == "Link 1"
    assert len(env.list(alice, "Secret").json) == 1
    assert env.resolve(link["share_token"]).json["permission_level"] == "view"


@pytest.mark.parametrize("share_id", ["nope", "00000000-0000-0000-0000-000000000000", "1" * 300])
def test_malformed_or_unknown_link_ids_are_not_found(env, users, share_id) -> None:
    alice, _ = users
    for method, body in (("PUT", {"permission_level": "view"}), ("DELETE", None)):
        r = env.call(method, f"/workflow-shares/{share_id}", alice, body)
        assert (r.status_code, r.json["code"]) == (404, "not_found")


def test_routes_need_a_signed_in_user(env, users) -> None:
    alice, _ = users
    link = env.create(alice).json
    for method, path in (("GET", env.links_path("My Flow")), ("POST", env.links_path("My Flow")),
                         ("PUT", f"/workflow-shares/{link['share_id']}"),
                         ("DELETE", f"/workflow-shares/{link['share_id']}")):
        r = env.call(method, path, None, {"permission_level": "view"})
        assert r.status_code == 401, (method, path)
        assert set(r.json) == {"error", "code"}
    assert env.count() == 1


def test_unserved_methods_are_405(env, users) -> None:
    alice, _ = users
    link = env.create(alice).json
    for method, path in (("DELETE", env.links_path("My Flow")),
                         ("GET", f"/workflow-shares/{link['share_id']}"),
                         ("POST", f"/workflow-shares/resolve/{link['share_token']}")):
        r = env.call(method, path, alice)
        assert (r.status_code, r.json["code"]) == (405, "method_not_allowed"), (method, path)


# -- resolve -------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [
    "A" * 32,                 # well-formed, unknown
    "short",                  # too short to be one of ours
    "x" * 5000,               # oversized
    "bad%20token%2Bchars!!",  # outside the base64url alphabet
    "%00" * 30,
])
def test_resolve_unknown_or_malformed_tokens(env, token) -> None:
    r = env.resolve(token)
    assert (r.status_code, r.json["code"]) == (404, "invalid_share_token")


def test_resolve_shows_owner_username(env, users) -> None:
    alice, _ = users
    link = env.create(alice).json
    env.run(lambda: Account.update(username="alice_w")
            .where(Account.address == alice.address.lower()).execute())
    assert env.resolve(link["share_token"]).json["owner_username"] == "alice_w"


# -- no orphans ----------------------------------------------------------------------------


def test_deleting_an_account_removes_its_links(env, users) -> None:
    alice, mallory = users
    env.create(alice)
    kept = env.create(mallory).json
    env.run(lambda: Account.delete().where(Account.address == alice.address.lower()).execute())
    assert env.count() == 1
    assert env.resolve(kept["share_token"]).status_code == 200
