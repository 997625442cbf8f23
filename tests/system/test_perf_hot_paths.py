"""The performance work's invariants (docs/PERFORMANCE.md): what it must not change."""

from __future__ import annotations

import falcon.testing
import httpx
import peewee
import pytest

from gateway_kernel import GatewayError
from gateway_plugins.proxy import urls
from tests.support.upstreams import ENGINE_A, Resolver, Upstream

API = "/api/v1"


@pytest.mark.parametrize(("base", "rest"), [
    ("http://127.0.0.1:8100", "/api/v1/workflows/list?x=1&y=%20z"),
    ("http://Engine.Example:80/pre%2Ffix", "/api/v1/a%20b"),
    ("https://engine.example/p", "/api/v1/x?q=%zz&r=%4"),
    ("http://[::1]:9000", "/api/v1/;a=b/@c?d=e:f/g?h"),
])
def test_request_target_is_what_httpx_would_send(base, rest):
    origin = urls.parse_origin(base)
    url = httpx.URL(base + rest)
    assert urls.request_target(origin, base, rest) == url.raw_path
    assert origin.address == (url.raw_scheme, url.raw_host, url.port)
    assert origin.host_header == url.netloc


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_proxied_request_carries_host_and_empty_body_length_like_httpx(make_gateway, signer,
                                                                         method):
    with Upstream() as upstream:
        resolver = Resolver({ENGINE_A: upstream.url}, default=ENGINE_A)
        gateway = make_gateway(plugins="auth_crypto,auth_internal,proxy", extra_plugins=[resolver])
        r = falcon.testing.TestClient(gateway).simulate_request(
            method, API + "/x", headers=signer.headers())
        assert r.status_code == 200, r.text
        seen = upstream.last
        assert seen.header("host") == httpx.URL(upstream.url).netloc.decode()
        assert seen.header("content-length") == ("0" if method == "POST" else None)


def test_proxy_raises_the_servers_body_cap_to_its_upload_limit(make_gateway):
    size = 3 * 1024 ** 3
    gateway = make_gateway(plugins="auth_crypto,auth_internal,proxy",
                           settings={"FLOWORK_PROXY_MAX_UPLOAD_BYTES": str(size)})
    assert gateway.request_body_limit >= size


def test_warm_engine_routes_generate_no_sql(monkeypatch, make_gateway, signer):
    """Engines list, auth-info, heartbeat and the proxy's resolve run prepared SQL only."""
    from gateway_plugins.engines.resolve import resolve_engine

    gateway = make_gateway(plugins="auth_crypto,auth_internal,engines,sharing")
    client = falcon.testing.TestClient(gateway)
    guest = type(signer).new()
    headers = signer.headers()
    engine = client.simulate_post(API + "/user/engines", json={"name": "e"}, headers=headers).json
    client.simulate_post(f"{API}/engines/{engine['id']}/shares",
                         json={"share_with_identifier": guest.address}, headers=headers)
    token = {"X-Engine-Token": engine["raw_token"]}
    guest_headers = guest.headers()
    plugin = gateway.pm.get_plugin("engines")
    with gateway.using_db() if hasattr(gateway, "using_db") else _activated(gateway):
        guest_id = gateway.ensure_account(guest.address.lower()).id
    gateway.release_db()

    def calls():
        assert client.simulate_get(API + "/user/engines", headers=headers).status_code == 200
        assert client.simulate_get(API + "/engine/get-engine-auth-info",
                                   headers=token).status_code == 200
        assert client.simulate_post(API + "/engine/heartbeat", json={},
                                    headers=token).status_code == 200
        assert client.simulate_get(API + "/user/engines", headers=guest_headers).status_code == 200
        with gateway.using_db() if hasattr(gateway, "using_db") else _activated(gateway):
            with pytest.raises(GatewayError) as offline:  # no URL reported yet
                resolve_engine(plugin.cfg, gateway.hook, guest_id, engine["id"])
            assert offline.value.code == "engine_offline"
        gateway.release_db()

    calls()  # warm: caches filled, SQL prepared
    built = []
    original = peewee.Context.sql
    monkeypatch.setattr(peewee.Context, "sql",
                        lambda self, obj: built.append(type(obj).__name__) or original(self, obj))
    calls()
    assert built == []


class _activated:
    def __init__(self, gateway):
        self.gateway = gateway

    def __enter__(self):
        self.token = self.gateway.activate()

    def __exit__(self, *exc):
        from gateway_kernel.db import deactivate

        deactivate(self.token)


# -- auth_crypto: recovery backend and the cache switch ------------------------------------


def _recoveries(monkeypatch) -> list[int]:
    import coincurve

    calls: list[int] = []
    original = coincurve.keys.PublicKey.from_signature_and_message
    monkeypatch.setattr(coincurve.keys.PublicKey, "from_signature_and_message",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.mark.parametrize("cache", ["on", "off"])
def test_recovery_uses_coincurve_whatever_ecc_backend_class_says(monkeypatch, make_gateway,
                                                                  signer, cache):
    from eth_keys.backends import get_backend

    monkeypatch.setenv("ECC_BACKEND_CLASS", "eth_keys.backends.NativeECCBackend")
    assert type(get_backend()).__name__ == "NativeECCBackend"  # what eth_keys would use
    calls = _recoveries(monkeypatch)
    gateway = make_gateway(plugins="auth_crypto", settings={"FLOWORK_AUTH_CACHE": cache})
    client = falcon.testing.TestClient(gateway)
    headers = signer.headers()
    for _ in range(3):
        r = client.simulate_get(API + "/auth/profile", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json["public_address"] == signer.address
    # Every recovery went through coincurve: once with the cache, per request without.
    assert len(calls) == (1 if cache == "on" else 3)


def test_auth_cache_off_reads_the_account_on_every_request(monkeypatch, make_gateway, signer):
    gateway = make_gateway(plugins="auth_crypto", settings={"FLOWORK_AUTH_CACHE": "0"})
    client = falcon.testing.TestClient(gateway)
    headers = signer.headers()
    assert client.simulate_get(API + "/auth/profile", headers=headers).status_code == 200
    seen: list[str] = []
    original = gateway.db.execute_sql
    monkeypatch.setattr(gateway.db, "execute_sql",
                        lambda sql, *a, **k: seen.append(sql) or original(sql, *a, **k))
    assert client.simulate_get(API + "/auth/profile", headers=headers).status_code == 200
    assert client.simulate_get(API + "/auth/profile", headers=headers).status_code == 200
    assert len([sql for sql in seen if "SELECT" in sql]) >= 2
    # logout still refuses older signatures at once
    assert client.simulate_post(API + "/auth/logout", headers=headers).status_code == 200
    assert client.simulate_get(API + "/auth/profile", headers=headers).status_code == 401


def test_auth_cache_setting_is_validated(make_gateway):
    from gateway_kernel import ConfigError

    with pytest.raises(ConfigError, match="FLOWORK_AUTH_CACHE"):
        make_gateway(plugins="auth_crypto", settings={"FLOWORK_AUTH_CACHE": "maybe"})
