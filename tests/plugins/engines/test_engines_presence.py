"""Engines plugin: heartbeat and URL rules, presence, auth info, static URLs, the proxy's
resolve hook, and the O(1) token lookup."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid

import pytest

from gateway_kernel import ConfigError, Principal, utcnow
from gateway_kernel.db import is_postgres
from gateway_kernel.errors import GatewayError
from gateway_plugins.engines.models import Engine
from gateway_plugins.engines.tokens import new_engine_token, token_digest
from gateway_plugins.engines.urls import InvalidEngineURL, validate_engine_url

API = "/api/v1"




def create(client, signer, name="engine"):
    r = client.simulate_post(f"{API}/user/engines", json={"name": name}, headers=signer.headers())
    assert r.status_code == 201, r.text
    return r.json


def heartbeat(client, token, body=None):
    return client.simulate_post(f"{API}/engine/heartbeat", json=body if body is not None else {},
                                headers={"X-Engine-Token": token})


def set_last_seen(gateway, engine_id, seconds_ago):
    with gateway.using_db():
        Engine.update(last_seen=utcnow() - dt.timedelta(seconds=seconds_ago)).where(
            Engine.id == engine_id).execute()


def stored_url(gateway, engine_id):
    with gateway.using_db():
        return Engine.get_by_id(engine_id).url


def share(client, owner, engine_id, guest, role=None):
    body = {"share_with_identifier": guest.address}
    if role:
        body["role"] = role
    r = client.simulate_post(f"{API}/engines/{engine_id}/shares", json=body,
                             headers=owner.headers())
    assert r.status_code == 201, r.text


def resolve(gateway, signer, engine_id=None):
    """Ask the resolve hook as the proxy does, for ``signer``'s user principal."""
    with gateway.using_db():
        account = gateway.ensure_account(signer.address.lower())
        principal = Principal(kind="user", scheme="test", account=account)
        return gateway.hook.flowork_resolve_engine(gateway=gateway, principal=principal,
                                                   engine_id=engine_id)


# -- heartbeat --------------------------------------------------------------------------------


def test_heartbeat_marks_online_and_records_url(gateway, client, signer):
    engine = create(client, signer)
    r = heartbeat(client, engine["raw_token"], {"url": "http://192.168.1.20:8989/",
                                                "vitals": {"cpu": 3}})
    assert r.status_code == 200
    assert r.json == {"status": "ok", "engine_id": engine["id"], "interval_s": 30}
    listed = client.simulate_get(f"{API}/user/engines", headers=signer.headers()).json
    assert listed[0]["status"] == "online"
    assert dt.datetime.fromisoformat(listed[0]["last_seen"]) > dt.datetime.now(dt.UTC) - \
        dt.timedelta(minutes=5)
    assert stored_url(gateway, engine["id"]) == "http://192.168.1.20:8989"


def test_heartbeat_url_absent_keeps_null_clears(gateway, client, signer):
    engine = create(client, signer)
    token = engine["raw_token"]
    assert heartbeat(client, token, {"url": "https://engine.example.com"}).status_code == 200
    assert heartbeat(client, token).status_code == 200
    assert stored_url(gateway, engine["id"]) == "https://engine.example.com"
    assert heartbeat(client, token, {"url": None}).status_code == 200
    assert stored_url(gateway, engine["id"]) is None


def test_heartbeat_with_empty_body(client, signer):
    engine = create(client, signer)
    r = client.simulate_post(f"{API}/engine/heartbeat", headers={"X-Engine-Token":
                                                                   engine["raw_token"]})
    assert r.status_code == 200


@pytest.mark.parametrize("body", [{"url": 5}, {"vitals": "hot"}, [1]])
def test_heartbeat_wrong_types_are_invalid_body(client, signer, body):
    engine = create(client, signer)
    r = heartbeat(client, engine["raw_token"], body)
    assert (r.status_code, r.json["code"]) == (400, "invalid_body")


def test_heartbeat_needs_a_valid_engine_token(client, signer):
    r = client.simulate_post(f"{API}/engine/heartbeat", json={})
    assert (r.status_code, r.json["code"]) == (401, "invalid_engine_token")
    r = heartbeat(client, new_engine_token())
    assert (r.status_code, r.json["code"]) == (401, "invalid_engine_token")


REFUSED_URLS = [
    "ftp://10.0.0.1/",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "10.0.0.1:8989",
    "http://",
    "http:///path",
    "http://user:pw@10.0.0.1/",
    "http://user@10.0.0.1/",
    "http://10.0.0.1/?next=x",
    "http://10.0.0.1/#frag",
    "http://10.0.0.1:99999/",
    "http://10.0.0.1 /",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.1.1:8080",
    "http://[fe80::1]:8989/",
    "http://[fd00:ec2::254]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://100.100.100.200/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.google.internal./",
    "http://metadata/",
    "http://\uff4detadata.google.internal/",
    "http://caf\u00e9.example.com/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://0.0.0.0:8989/",
    "http://[::]:8989/",
    "http://224.0.0.1/",
    "http://" + "a" * 2100 + ".example.com/",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_refused_urls_are_invalid_engine_url(gateway, client, signer, url):
    engine = create(client, signer)
    heartbeat(client, engine["raw_token"], {"url": "http://10.9.9.9:1"})
    r = heartbeat(client, engine["raw_token"], {"url": url})
    assert (r.status_code, r.json["code"]) == (400, "invalid_engine_url")
    assert stored_url(gateway, engine["id"]) == "http://10.9.9.9:1"  # nothing changed


@pytest.mark.parametrize("url,stored", [
    ("http://192.168.1.10:8989", "http://192.168.1.10:8989"),
    ("https://engine.example.com/", "https://engine.example.com"),
    ("http://127.0.0.1:8989/", "http://127.0.0.1:8989"),
    ("http://localhost:8989", "http://localhost:8989"),
    ("http://[2001:db8::1]:8000/flowork/", "http://[2001:db8::1]:8000/flowork"),
])
def test_accepted_urls(gateway, client, signer, url, stored):
    engine = create(client, signer)
    assert heartbeat(client, engine["raw_token"], {"url": url}).status_code == 200
    assert stored_url(gateway, engine["id"]) == stored


def test_allow_list_narrows_to_ip_literals_inside(make_gateway, signer):
    import falcon.testing

    gateway = make_gateway(settings={"FLOWORK_ENGINE_NETWORKS": "10.0.0.0/8, 2001:db8::/32, "
                                                                "169.254.0.0/16"})
    client = falcon.testing.TestClient(gateway)
    token = create(client, signer)["raw_token"]
    for url in ("http://10.1.2.3:8989", "http://[2001:db8::5]/", "http://[::ffff:10.0.0.7]/"):
        assert heartbeat(client, token, {"url": url}).status_code == 200, url
    # Outside the networks; a host name (DNS can point anywhere); link-local even if listed.
    for url in ("http://192.168.1.1/", "http://engine.example.com/", "http://localhost/",
                "http://169.254.169.254/"):
        r = heartbeat(client, token, {"url": url})
        assert (r.status_code, r.json["code"]) == (400, "invalid_engine_url"), url


def test_validate_engine_url_messages_do_not_echo_credentials():
    with pytest.raises(InvalidEngineURL) as info:
        validate_engine_url("http://admin:hunter2@10.0.0.1/")
    assert "hunter2" not in str(info.value)


# -- presence ---------------------------------------------------------------------------------


def test_status_follows_the_online_window(gateway, client, signer):
    engine = create(client, signer)
    set_last_seen(gateway, engine["id"], 100)
    listed = client.simulate_get(f"{API}/user/engines", headers=signer.headers()).json
    assert listed[0]["status"] == "online"
    set_last_seen(gateway, engine["id"], 121)
    listed = client.simulate_get(f"{API}/user/engines", headers=signer.headers()).json
    assert listed[0]["status"] == "offline"
    assert listed[0]["last_seen"] is not None


def test_online_window_is_configurable(make_gateway, signer):
    import falcon.testing

    gateway = make_gateway(settings={"FLOWORK_ENGINE_ONLINE_S": "600"})
    client = falcon.testing.TestClient(gateway)
    engine = create(client, signer)
    r = heartbeat(client, engine["raw_token"])
    assert r.json["interval_s"] == 150
    set_last_seen(gateway, engine["id"], 500)
    assert client.simulate_get(f"{API}/user/engines",
                               headers=signer.headers()).json[0]["status"] == "online"


# -- auth info --------------------------------------------------------------------------------


def test_auth_info_lists_owner_and_guests_lowercase_with_roles(client, make_signer):
    alice, bob, carol = make_signer(), make_signer(), make_signer()
    engine = create(client, alice)
    share(client, alice, engine["id"], bob, "reader")
    share(client, alice, engine["id"], carol)
    r = client.simulate_get(f"{API}/engine/get-engine-auth-info",
                            headers={"X-Engine-Token": engine["raw_token"]})
    assert r.status_code == 200
    owner, b, c = (s.address.lower() for s in (alice, bob, carol))
    assert r.json["engine_id"] == engine["id"]
    assert r.json["authorized_addresses"][0] == owner
    assert sorted(r.json["authorized_addresses"]) == sorted([owner, b, c])
    assert r.json["roles"] == {owner: "owner", b: "reader", c: "runner"}


def test_auth_info_of_another_engine_is_separate(client, make_signer):
    alice, bob = make_signer(), make_signer()
    mine = create(client, alice)
    create(client, bob)
    r = client.simulate_get(f"{API}/engine/get-engine-auth-info",
                            headers={"X-Engine-Token": mine["raw_token"]})
    assert r.json["authorized_addresses"] == [alice.address.lower()]


def test_token_lookup_is_one_indexed_query_whatever_the_engine_count(gateway, client, signer,
                                                                     caplog):
    engine = create(client, signer)
    headers = {"X-Engine-Token": engine["raw_token"]}

    def lookups() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="peewee"):
            assert client.simulate_get(f"{API}/engine/get-engine-auth-info",
                                       headers=headers).status_code == 200
        sqls = [str(rec.msg[0]) for rec in caplog.records if isinstance(rec.msg, tuple)]
        return [q for q in sqls if "token_digest" in q]

    few = lookups()
    with gateway.using_db():
        owner = Engine.get_by_id(engine["id"]).owner_id
        rows = [{"id": str(uuid.uuid4()), "owner": owner, "name": f"e{i}",
                 "token_digest": secrets.token_hex(32)} for i in range(3000)]
        for start in range(0, len(rows), 500):
            Engine.insert_many(rows[start:start + 500]).execute()
        if is_postgres(gateway.db):
            gateway.db.execute_sql("ANALYZE engines_engine")
    many = lookups()
    assert len(few) == len(many) == 1
    # The one query is an equality on token_digest that the database answers from an index.
    sql, params = (Engine.select(Engine.id, Engine.owner)
                   .where(Engine.token_digest == token_digest(engine["raw_token"])).sql())
    with gateway.using_db():
        if is_postgres(gateway.db):
            plan = " ".join(r[0] for r in gateway.db.execute_sql("EXPLAIN " + sql, params))
            assert "Index" in plan and "Seq Scan" not in plan, plan
        else:
            plan = " ".join(str(r[-1]) for r in
                            gateway.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
            assert "INDEX" in plan and not plan.startswith("SCAN"), plan


# -- static URLs and the resolve hook ---------------------------------------------------------


def test_static_url_makes_an_offline_engine_routable(make_gateway, signer):
    import falcon.testing

    first = make_gateway()
    engine = create(falcon.testing.TestClient(first), signer)
    gateway = make_gateway(settings={"FLOWORK_ENGINE_URLS":
                                     f"{engine['id'].upper()}=http://engine-a.internal:8989/"})
    client = falcon.testing.TestClient(gateway)
    target = resolve(gateway, signer, engine["id"])
    assert target.url == "http://engine-a.internal:8989"
    assert target.static is True and target.online is False
    # Listed status still follows heartbeats.
    assert client.simulate_get(f"{API}/user/engines",
                               headers=signer.headers()).json[0]["status"] == "offline"
    heartbeat(client, engine["raw_token"], {"url": "http://10.0.0.5:1"})
    target = resolve(gateway, signer, engine["id"])
    assert (target.url, target.static, target.online) == ("http://engine-a.internal:8989",
                                                          True, True)


@pytest.mark.parametrize("value", ["not-a-uuid=http://x", f"{uuid.uuid4()}=ftp://x",
                                   f"{uuid.uuid4()}=http://u:p@x/"])
def test_bad_static_urls_fail_at_start_up(make_gateway, value):
    with pytest.raises(ConfigError, match="FLOWORK_ENGINE_URLS"):
        make_gateway(settings={"FLOWORK_ENGINE_URLS": value})


def test_resolve_by_id_owned_shared_or_404(gateway, client, make_signer):
    alice, bob, mallory = make_signer(), make_signer(), make_signer()
    engine = create(client, alice)
    heartbeat(client, engine["raw_token"], {"url": "http://10.0.0.8:8989"})
    share(client, alice, engine["id"], bob)
    for who in (alice, bob):
        target = resolve(gateway, who, engine["id"])
        assert (target.engine_id, target.url, target.online, target.static) == (
            engine["id"], "http://10.0.0.8:8989", True, False)
    for engine_id in (engine["id"], "garbage", str(uuid.uuid4())):
        with pytest.raises(GatewayError) as info:
            resolve(gateway, mallory, engine_id)
        assert (info.value.status_code, info.value.code) == (404, "not_found")


@pytest.mark.parametrize("last_heartbeat", [None, 500])
def test_resolve_offline_engine_is_503_with_retry_after(gateway, client, signer,
                                                        last_heartbeat):
    engine = create(client, signer)
    if last_heartbeat is not None:  # seen long ago, with a URL
        heartbeat(client, engine["raw_token"], {"url": "http://10.0.0.8:8989"})
        set_last_seen(gateway, engine["id"], last_heartbeat)
    with pytest.raises(GatewayError) as info:
        resolve(gateway, signer, engine["id"])
    assert (info.value.status_code, info.value.code) == (503, "engine_offline")
    assert int(info.value.headers["Retry-After"]) > 0


def test_resolve_online_engine_without_url_is_offline(gateway, client, signer):
    engine = create(client, signer)
    heartbeat(client, engine["raw_token"])
    with pytest.raises(GatewayError) as info:
        resolve(gateway, signer, engine["id"])
    assert info.value.code == "engine_offline"
    with pytest.raises(GatewayError):
        resolve(gateway, signer, None)


def test_resolve_default_is_most_recently_seen_online_engine(gateway, client, make_signer):
    alice, bob = make_signer(), make_signer()
    with pytest.raises(GatewayError) as info:
        resolve(gateway, alice, None)
    assert (info.value.status_code, info.value.code) == (503, "engine_offline")
    older, newer, stale = (create(client, alice, n) for n in ("older", "newer", "stale"))
    for engine, port in ((older, 1), (newer, 2), (stale, 3)):
        heartbeat(client, engine["raw_token"], {"url": f"http://10.0.0.1:{port}"})
    set_last_seen(gateway, older["id"], 60)
    set_last_seen(gateway, newer["id"], 10)
    set_last_seen(gateway, stale["id"], 1000)
    target = resolve(gateway, alice, None)
    assert (target.engine_id, target.url, target.owned) == (newer["id"], "http://10.0.0.1:2", True)
    # Bob owns nothing; alice shares "older" with him. A shared engine is never a default
    # (it would hand alice bob's signature unasked): only when named explicitly.
    share(client, alice, older["id"], bob)
    with pytest.raises(GatewayError) as info:
        resolve(gateway, bob, None)
    assert (info.value.status_code, info.value.code) == (503, "engine_offline")
    explicit = resolve(gateway, bob, older["id"])
    assert (explicit.engine_id, explicit.owned) == (older["id"], False)
    # Even a shared engine seen more recently than bob's own does not win.
    own = create(client, bob, "bob's")
    heartbeat(client, own["raw_token"], {"url": "http://10.0.0.2:1"})
    set_last_seen(gateway, own["id"], 30)
    set_last_seen(gateway, older["id"], 1)
    assert resolve(gateway, bob, None).engine_id == own["id"]
