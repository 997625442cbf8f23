"""The public proxies: only the configured public engine, GET/HEAD only, and a bounded cache
that honours Cache-Control and Vary."""

from __future__ import annotations

import falcon.testing
import pytest

from gateway_kernel import ConfigError
from tests.support.upstreams import ENGINE_A, Resolver, refused_url

API = "/api/v1"


@pytest.fixture
def public(make_gateway, upstream):
    def build(settings=None, plugins="auth_crypto,auth_internal,proxy"):
        merged = {"FLOWORK_PUBLIC_ENGINE_URL": upstream.url, **(settings or {})}
        gateway = make_gateway(plugins=plugins, settings=merged)
        return gateway, falcon.testing.TestClient(gateway)

    return build


def test_no_public_engine_is_503(make_gateway):
    client = falcon.testing.TestClient(make_gateway(plugins="auth_crypto,auth_internal,proxy"))
    for path in ("/news", "/localization/en", "/components/node/abc/icon"):
        r = client.simulate_get(API + path)
        assert r.status_code == 503
        assert r.json["code"] == "no_public_engine"


def test_bad_public_engine_url_fails_at_start_up(make_gateway):
    with pytest.raises(ConfigError, match="FLOWORK_PUBLIC_ENGINE_URL"):
        make_gateway(plugins="proxy", settings={"FLOWORK_PUBLIC_ENGINE_URL": "ftp://x"})


@pytest.mark.parametrize("path", ["/news", "/localization/pt-BR", "/components/node/a%20b/icon"])
def test_public_paths_go_to_the_public_engine_without_credentials(public, upstream, signer, path):
    _, client = public()
    r = client.simulate_get(API + path, headers={**signer.headers(), "Cookie": "s=1",
                                                 "Authorization": "Bearer t",
                                                 "X-Flowork-Engine-ID": ENGINE_A})
    assert r.status_code == 200
    seen = upstream.last
    assert seen.target == API + path
    for gone in ("x-user-address", "x-signature", "x-signed-message", "cookie", "authorization",
                 "x-flowork-user-id", "x-flowork-engine-id"):
        assert gone not in seen.names(), gone
    assert seen.header("x-forwarded-for")


def test_public_paths_never_use_a_user_engine(make_gateway, upstream, signer):
    # a resolver is present and would answer, but public routes never ask it
    resolver = Resolver({ENGINE_A: upstream.url}, default=ENGINE_A)
    gateway = make_gateway(plugins="auth_crypto,auth_internal,proxy", extra_plugins=[resolver])
    r = falcon.testing.TestClient(gateway).simulate_get(API + "/news", headers=signer.headers())
    assert r.status_code == 503
    assert r.json["code"] == "no_public_engine"
    assert resolver.calls == [] and upstream.requests == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_with_allow(public, upstream, method):
    _, client = public()
    r = client.simulate_request(method, API + "/news", body=b"{}")
    assert r.status_code == 405
    assert r.json["code"] == "method_not_allowed"
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "HEAD"} <= allowed and method not in allowed
    assert upstream.requests == []


def test_dot_segment_in_a_public_path_is_refused(public, upstream):
    _, client = public()
    r = client.simulate_get(API + "/localization/..")
    assert r.status_code == 404
    assert upstream.requests == []


def test_public_engine_failures(make_gateway):
    gateway = make_gateway(plugins="auth_crypto,auth_internal,proxy",
                           settings={"FLOWORK_PUBLIC_ENGINE_URL": refused_url()})
    r = falcon.testing.TestClient(gateway).simulate_get(API + "/news")
    assert r.status_code == 502
    assert r.json["code"] == "engine_unreachable"


def test_max_age_is_cached_and_served_with_age(public, upstream):
    _, client = public()
    first = client.simulate_get(API + "/news", query_string="cc=public, max-age=60")
    second = client.simulate_get(API + "/news", query_string="cc=public, max-age=60")
    assert first.json["hit"] == 1 and second.json["hit"] == 1
    assert second.content == first.content
    assert second.headers["cache-control"] == "public, max-age=60"
    assert int(second.headers["age"]) >= 0
    assert second.headers["content-length"] == str(len(first.content))
    assert len(upstream.requests) == 1
    # HEAD is answered from the cached GET
    head = client.simulate_head(API + "/news", query_string="cc=public, max-age=60")
    assert head.status_code == 200 and head.content == b""
    assert len(upstream.requests) == 1


def test_cache_is_keyed_by_accept_encoding(public, upstream):
    _, client = public()
    q = "cc=max-age=60&vary=Accept-Encoding"
    a = client.simulate_get(API + "/news", query_string=q, headers={"Accept-Encoding": "gzip"})
    b = client.simulate_get(API + "/news", query_string=q, headers={"Accept-Encoding": "br"})
    a2 = client.simulate_get(API + "/news", query_string=q, headers={"Accept-Encoding": "gzip"})
    assert (a.json["hit"], b.json["hit"], a2.json["hit"]) == (1, 2, 1)
    assert b.json["accept_encoding"] == "br"


@pytest.mark.parametrize("query", [
    "cc=no-store, max-age=60",
    "cc=private, max-age=60",
    "cc=no-cache, max-age=60",
    "cc=max-age=0",
    "cc=max-age=60&vary=Accept-Language",
    "cc=max-age=60&vary=*",
    "cc=max-age=60&cookie=1",
    "",  # no Cache-Control: no heuristic caching
])
def test_uncacheable_answers_are_not_cached(public, upstream, query):
    _, client = public()
    first = client.simulate_get(API + "/localization/en", query_string=query)
    second = client.simulate_get(API + "/localization/en", query_string=query)
    assert (first.json["hit"], second.json["hit"]) == (1, 2)
    assert "age" not in second.headers
    assert "set-cookie" not in second.headers


def test_cached_entries_expire(public, upstream):
    gateway, client = public()
    assert client.simulate_get(API + "/news", query_string="cc=max-age=10").json["hit"] == 1
    cache = gateway.plugins["proxy"].forwarder.cache
    now = cache.clock()
    cache.clock = lambda: now + 5
    assert client.simulate_get(API + "/news", query_string="cc=max-age=10").json["hit"] == 1
    cache.clock = lambda: now + 11
    assert client.simulate_get(API + "/news", query_string="cc=max-age=10").json["hit"] == 2


def test_cache_is_bounded(public, upstream):
    gateway, client = public({"FLOWORK_PROXY_CACHE_BYTES": "1000",
                              "FLOWORK_PROXY_CACHE_ENTRY_BYTES": "500"})
    for lang in ("a", "b", "c", "d", "e", "f", "g", "h"):
        assert client.simulate_get(API + f"/localization/{lang}",
                                   query_string="cc=max-age=60").status_code == 200
    cache = gateway.plugins["proxy"].forwarder.cache
    assert 0 < len(cache) < 8
    # the oldest were evicted and are fetched again
    assert client.simulate_get(API + "/localization/a",
                               query_string="cc=max-age=60").json["hit"] == 2


def test_cache_can_be_disabled(public, upstream):
    _, client = public({"FLOWORK_PROXY_CACHE_BYTES": "0"})
    client.simulate_get(API + "/news", query_string="cc=max-age=60")
    assert client.simulate_get(API + "/news", query_string="cc=max-age=60").json["hit"] == 2


def test_openapi_documents_the_public_routes(public):
    _, client = public()
    doc = client.simulate_get(API + "/openapi.json").json
    for path in ("/localization/{lang_code}", "/news", "/components/{type}/{id}/icon"):
        item = doc["paths"][path]
        assert set(item) == {"get"}
        assert item["get"]["security"] == []
        for status in ("502", "503", "504"):
            assert status in item["get"]["responses"]
