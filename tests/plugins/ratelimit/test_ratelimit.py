"""The ratelimit plugin: operator-configured limits per principal and per client address,
per route group (the owning plugin), in memory or shared through Redis."""

from __future__ import annotations

import os
import uuid

import falcon.testing
import pytest
import redis

from gateway_kernel import ConfigError

API = "/api/v1"
REDIS_URL = os.environ.get("FLOWORK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def limited(make_gateway, rules, **settings):
    gateway = make_gateway(settings={"FLOWORK_RATE_LIMITS": rules, **settings})
    return gateway, falcon.testing.TestClient(gateway)


def test_no_rules_no_limit_and_no_headers(client, signer):
    for _ in range(5):
        r = client.simulate_get(API + "/user/engines", headers=signer.headers())
        assert r.status_code == 200
    assert "ratelimit-limit" not in r.headers


def test_principal_limit_in_its_group_only(make_gateway, make_signer):
    _, client = limited(make_gateway, "engines:principal=3/minute")
    alice, bob = make_signer(), make_signer()
    remaining = []
    for _ in range(3):
        r = client.simulate_get(API + "/user/engines", headers=alice.headers())
        assert r.status_code == 200
        assert r.headers["ratelimit-limit"] == "3"
        remaining.append(int(r.headers["ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    r = client.simulate_get(API + "/user/engines", headers=alice.headers())
    assert r.status_code == 429
    assert r.json["code"] == "rate_limited" and "3/minute" in r.json["error"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["ratelimit-remaining"] == "0"
    # another principal has its own counter; another group is not limited
    assert client.simulate_get(API + "/user/engines", headers=bob.headers()).status_code == 200
    assert client.simulate_get(API + "/auth/profile", headers=alice.headers()).status_code == 200


def test_address_limit_counts_public_and_anonymous_requests(make_gateway):
    _, client = limited(make_gateway, "*:address=2/minute")
    assert client.simulate_get(API + "/system/health").status_code == 200
    assert client.simulate_get(API + "/system/health").status_code == 200
    r = client.simulate_get(API + "/system/health")
    assert r.status_code == 429 and r.json["code"] == "rate_limited"
    # another client address is counted apart
    r = client.simulate_get(API + "/system/health", remote_addr="10.9.8.7")
    assert r.status_code == 200


def test_engine_and_service_principals_are_counted(make_gateway, signer, service_headers):
    _, client = limited(make_gateway, "killswitch:principal=1/minute")
    assert client.simulate_get(API + "/system/disabled-components",
                               headers=service_headers).status_code == 200
    r = client.simulate_get(API + "/system/disabled-components", headers=service_headers)
    assert r.status_code == 429


@pytest.mark.parametrize("rules", ["engines=3/minute", "engines:ip=3/minute",
                                   "engines:principal=lots", "nosuchplugin:principal=1/second"])
def test_bad_rules_stop_the_gateway_naming_the_setting(make_gateway, rules):
    with pytest.raises(ConfigError, match="FLOWORK_RATE_LIMITS"):
        make_gateway(settings={"FLOWORK_RATE_LIMITS": rules})


def test_leaving_the_plugin_out_disables_it(make_gateway, signer):
    plugins = "auth_crypto,auth_internal,engines,sharing,proxy"
    gateway = make_gateway(plugins=plugins, settings={"FLOWORK_RATE_LIMITS": "*:address=1/minute"})
    client = falcon.testing.TestClient(gateway)
    for _ in range(3):
        assert client.simulate_get(API + "/system/health").status_code == 200


@pytest.fixture
def redis_prefix():
    try:
        conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        conn.ping()
    except redis.RedisError:
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    prefix = f"flowork-test-{uuid.uuid4().hex}"
    yield prefix
    for key in conn.scan_iter(f"{prefix}*"):
        conn.delete(key)
    conn.close()


def test_two_instances_share_limits_through_redis(make_gateway, make_signer, redis_prefix):
    settings = {"FLOWORK_RATE_LIMITS": "engines:principal=4/minute",
                "FLOWORK_REDIS_URL": REDIS_URL, "FLOWORK_RATE_LIMIT_KEY_PREFIX": redis_prefix}
    a = falcon.testing.TestClient(make_gateway(settings=settings))
    b = falcon.testing.TestClient(make_gateway(settings=settings))
    user = make_signer()
    codes = [c.simulate_get(API + "/user/engines", headers=user.headers()).status_code
             for c in (a, b, a, b, a, b)]
    assert codes == [200, 200, 200, 200, 429, 429]


def test_redis_outage_admits_requests(make_gateway, signer):
    # A closed loopback port: the storage fails, the gateway keeps serving.
    _, client = limited(make_gateway, "engines:principal=1/minute",
                        FLOWORK_REDIS_URL="redis://127.0.0.1:1/0")
    for _ in range(3):
        assert client.simulate_get(API + "/user/engines", headers=signer.headers()).status_code == 200


def test_address_behind_a_trusted_balancer_is_the_forwarded_client(make_gateway):
    _, client = limited(make_gateway, "*:address=1/minute", FLOWORK_TRUSTED_PROXIES="127.0.0.0/8")
    balancer = {"remote_addr": "127.0.0.1"}
    one = {"X-Forwarded-For": "203.0.113.7"}
    other = {"X-Forwarded-For": "203.0.113.8"}
    assert client.simulate_get(API + "/system/health", headers=one, **balancer).status_code == 200
    assert client.simulate_get(API + "/system/health", headers=one, **balancer).status_code == 429
    # another client behind the same balancer has its own counter
    assert client.simulate_get(API + "/system/health", headers=other, **balancer).status_code == 200
