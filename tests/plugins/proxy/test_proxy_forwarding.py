"""The authenticated proxy: what reaches the engine, and what comes back (real loopback engine)."""

from __future__ import annotations

import hashlib

import falcon.testing
import pytest

from gateway_kernel.testing import SERVICE_SECRET
from tests.support.upstreams import (
    ENGINE_A,
    ENGINE_B,
    GZIP_BODY,
    RequestHook,
    Resolver,
    pattern_sha256,
)

API = "/api/v1"
PLUGINS = "auth_crypto,auth_internal,proxy"


@pytest.fixture
def setup(make_gateway, upstream):
    """(client, resolver, hook) for a gateway whose user engines resolve to ``upstream``."""

    def build(settings=None, hook=None, urls=None):
        resolver = Resolver(urls or {ENGINE_A: upstream.url}, default=ENGINE_A)
        extra = [resolver] + ([hook] if hook else [])
        gateway = make_gateway(plugins=PLUGINS, settings=settings, extra_plugins=extra)
        return falcon.testing.TestClient(gateway), resolver

    return build


def test_request_reaches_engine_with_clean_headers(setup, upstream, auth, signer):
    client, resolver = setup()
    r = client.simulate_get(
        API + "/workflows/list", query_string="x=1&y=%20z",
        remote_addr="203.0.113.7",
        headers={
            **auth,
            "X-Flowork-Engine-ID": ENGINE_A,
            "Cookie": "session=abc",
            "X-API-Key": SERVICE_SECRET,
            "X-Engine-Token": "dev_engine_xxx",
            "X-Flowork-User-ID": "0x0000000000000000000000000000000000000001",
            "X-Forwarded-For": "10.9.9.9",
            "X-Forwarded-Host": "spoofed.example",
            "X-Real-IP": "10.9.9.9",
            "Forwarded": "for=10.9.9.9",
            "Connection": "X-Foo, Keep-Alive",
            "X-Foo": "hop",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Request-ID": "req-123",
            "Accept-Language": "de",
            "Host": "gw.example",
        },
    )
    assert r.status_code == 200, r.text
    seen = upstream.last
    assert seen.method == "GET"
    assert seen.target == "/api/v1/workflows/list?x=1&y=%20z"
    assert resolver.calls == [(signer.address, ENGINE_A)]
    # added by the gateway
    assert seen.header("x-flowork-user-id") == signer.address  # checksummed
    assert seen.header("x-flowork-engine-id") == ENGINE_A
    assert seen.header("x-forwarded-for") == "203.0.113.7"
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-host") == "gw.example"
    assert "flowork-gateway" in seen.header("via")
    assert seen.header("x-request-id") == "req-123"
    # kept: the signature headers (the engine verifies them) and ordinary headers
    for name in ("X-User-Address", "X-Signature", "X-Signed-Message"):
        assert seen.header(name.lower()) == auth[name]
    assert seen.header("accept-language") == "de"
    # removed
    names = seen.names()
    for gone in ("cookie", "x-api-key", "x-engine-token", "x-foo", "keep-alive", "te",
                 "proxy-authorization", "forwarded", "x-real-ip"):
        assert gone not in names, gone
    assert SERVICE_SECRET not in str(seen.headers)
    assert r.headers["x-request-id"] == "req-123"


def test_forwarded_headers_kept_from_trusted_proxy(setup, upstream, auth):
    client, _ = setup(settings={"FLOWORK_TRUSTED_PROXIES": "10.0.0.0/8"})
    headers = {**auth, "X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "flowork.cloud", "Forwarded": "for=198.51.100.1"}
    assert client.simulate_get(API + "/x", headers=headers, remote_addr="10.1.2.3").status_code == 200
    seen = upstream.last
    assert seen.header("x-forwarded-for") == "198.51.100.1, 10.1.2.3"
    assert seen.header("x-forwarded-proto") == "https"
    assert seen.header("x-forwarded-host") == "flowork.cloud"
    assert seen.header("forwarded") == "for=198.51.100.1"
    # the same headers from an untrusted peer are replaced
    assert client.simulate_get(API + "/x", headers=headers, remote_addr="192.0.2.5").status_code == 200
    seen = upstream.last
    assert seen.header("x-forwarded-for") == "192.0.2.5"
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("forwarded") is None


@pytest.mark.parametrize("value", ["", "null"])
def test_empty_or_null_engine_header_means_default(setup, auth, value):
    client, resolver = setup()
    r = client.simulate_get(API + "/x", headers={**auth, "X-Flowork-Engine-ID": value})
    assert r.status_code == 200
    assert resolver.calls[-1][1] is None


def test_engine_resolution_errors_pass_through(setup, upstream, auth):
    client, _ = setup()
    r = client.simulate_get(API + "/x", headers={**auth, "X-Flowork-Engine-ID": ENGINE_B})
    assert r.status_code == 404
    assert r.json["code"] == "not_found"
    assert upstream.requests == []


def test_no_engine_is_503_engine_offline(make_gateway, upstream, auth):
    gateway = make_gateway(plugins=PLUGINS, extra_plugins=[Resolver({}, default=None)])
    r = falcon.testing.TestClient(gateway).simulate_get(API + "/x", headers=auth)
    assert r.status_code == 503
    assert r.json["code"] == "engine_offline"
    assert int(r.headers["retry-after"]) > 0


def test_no_resolver_at_all_is_503_engine_offline(make_gateway, auth):
    gateway = make_gateway(plugins=PLUGINS)
    r = falcon.testing.TestClient(gateway).simulate_get(API + "/x", headers=auth)
    assert r.status_code == 503
    assert r.json["code"] == "engine_offline"
    assert "retry-after" in r.headers


def test_unauthenticated_request_never_reaches_engine(setup, upstream):
    client, _ = setup()
    r = client.simulate_get(API + "/x")
    assert r.status_code == 401
    assert r.json["code"] == "missing_auth"
    assert upstream.requests == []


def test_owned_paths_are_never_proxied(setup, upstream, auth):
    client, _ = setup()
    assert client.simulate_get(API + "/system/health").status_code == 200
    r = client.simulate_post(API + "/system/health", headers=auth)
    assert r.status_code == 405
    assert r.json["code"] == "method_not_allowed"
    assert upstream.requests == []


@pytest.mark.parametrize(("path", "target"), [
    ("/a%2Fb", "/api/v1/a/b"),                        # an encoded slash stays below /api/v1
    ("/%252e%252e/admin", "/api/v1/%252e%252e/admin"),  # never decoded twice
    ("/caf%C3%A9 au lait", "/api/v1/caf%C3%A9%20au%20lait"),
    ("/keep/trailing/", "/api/v1/keep/trailing/"),
    ("/semi;colon:at@", "/api/v1/semi;colon:at@"),
])
def test_paths_are_reencoded_below_api_v1(setup, upstream, auth, path, target):
    client, _ = setup()
    r = client.simulate_get(API + path, headers=auth)
    assert r.status_code == 200
    assert upstream.last.target == target


@pytest.mark.parametrize("path", [
    "/..%2F..%2Fadmin", "/x/%2e%2e/y", "/x/../../etc/passwd", "/./x", "/x/..%5C..%5Cadmin",
    "/%00",
])
def test_path_traversal_is_refused(setup, upstream, auth, path):
    client, _ = setup()
    r = client.simulate_get(API + path, headers=auth)
    assert r.status_code == 404
    assert r.json["code"] == "not_found"
    assert upstream.requests == []


def test_request_hook_can_add_headers_but_never_leak_the_secret(setup, upstream, auth):
    hook = RequestHook(add={"x-added": "yes", "x-leak": f"Bearer {SERVICE_SECRET}",
                            "x-leak-2": SERVICE_SECRET})
    client, _ = setup(hook=hook)
    r = client.simulate_post(API + "/run", headers={**auth, "Cookie": "a=b"}, body=b"{}")
    assert r.status_code == 200
    method, path, headers = hook.seen[-1]
    assert (method, path) == ("POST", "/run")
    assert headers["x-flowork-engine-id"] == ENGINE_A and "cookie" not in headers
    seen = upstream.last
    assert seen.header("x-added") == "yes"
    assert "x-leak" not in seen.names() and "x-leak-2" not in seen.names()
    assert SERVICE_SECRET not in str(seen.headers)


def test_request_hook_can_refuse(setup, upstream, auth):
    client, _ = setup(hook=RequestHook(refuse="/admin"))
    r = client.simulate_get(API + "/admin/users", headers=auth)
    assert r.status_code == 404
    assert r.json == {"error": "Refused by policy", "code": "not_found"}
    assert upstream.requests == []


def test_upload_streams_through_with_length(setup, upstream, auth):
    client, _ = setup()
    body = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)
    r = client.simulate_post(API + "/upload", headers={**auth, "Content-Type": "application/x-bin"},
                             body=body)
    assert r.status_code == 200
    assert r.json["sha256"] == hashlib.sha256(body).hexdigest()
    assert r.json["length"] == len(body)
    assert upstream.last.header("content-length") == str(len(body))
    assert upstream.last.header("content-type") == "application/x-bin"


def test_upload_over_the_limit_is_413(setup, upstream, auth):
    client, _ = setup(settings={"FLOWORK_PROXY_MAX_UPLOAD_BYTES": "1000"})
    r = client.simulate_put(API + "/upload", headers=auth, body=b"x" * 1001)
    assert r.status_code == 413
    assert r.json["code"] == "body_too_large"
    assert upstream.requests == []
    assert client.simulate_put(API + "/upload", headers=auth, body=b"x" * 1000).status_code == 200


def test_download_by_hash_with_content_length(setup, auth):
    client, _ = setup()
    size = 5 * 1024 * 1024 + 3
    r = client.simulate_get(API + "/download", query_string=f"size={size}", headers=auth)
    assert r.status_code == 200
    assert r.headers["content-length"] == str(size)
    assert r.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(r.content).hexdigest() == pattern_sha256(size)


def test_chunked_download_by_hash(setup, auth):
    client, _ = setup()
    size = 1024 * 1024 + 5
    r = client.simulate_get(API + "/chunked", query_string=f"size={size}", headers=auth)
    assert r.status_code == 200
    assert "content-length" not in r.headers
    assert hashlib.sha256(r.content).hexdigest() == pattern_sha256(size)


def test_gzip_arrives_byte_identical(setup, upstream, auth):
    client, _ = setup()
    r = client.simulate_get(API + "/gzip", headers={**auth, "Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.content == GZIP_BODY
    assert r.headers["content-length"] == str(len(GZIP_BODY))
    assert upstream.last.header("accept-encoding") == "gzip"


def test_no_accept_encoding_is_invented(setup, upstream, auth):
    client, _ = setup()
    client.simulate_get(API + "/x", headers=auth)
    assert "accept-encoding" not in upstream.last.names()


@pytest.mark.parametrize("code", [418, 500, 502, 503])
def test_engine_status_and_custom_headers_pass_through(setup, auth, code):
    client, _ = setup()
    r = client.simulate_get(API + f"/status/{code}", headers=auth)
    assert r.status_code == code
    assert r.json == {"status": code}
    assert r.headers["x-custom"] == "teapot"
    assert r.headers["x-other"] == "two"
    assert "flowork-gateway" in r.headers["via"]


@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_answers_stay_bodiless(setup, upstream, auth, code):
    client, _ = setup()
    r = client.simulate_get(API + f"/status/{code}", headers=auth)
    assert r.status_code == code
    assert r.content == b""
    assert r.headers["x-custom"] == "teapot"
    assert "content-type" not in r.headers
    # the engine connection is still in a clean state for the next request
    assert client.simulate_get(API + "/x", headers=auth).json["method"] == "GET"


def test_head_passes_length_without_body(setup, upstream, auth):
    client, _ = setup()
    r = client.simulate_head(API + "/download", query_string="size=12345", headers=auth)
    assert r.status_code == 200
    assert r.headers["content-length"] == "12345"
    assert r.content == b""
    assert upstream.last.method == "HEAD"


def test_response_hop_by_hop_and_gateway_owned_headers_are_stripped(setup, auth):
    client, _ = setup()
    r = client.simulate_get(API + "/connection", headers=auth)
    assert r.status_code == 200
    assert r.headers["x-kept"] == "yes"
    for gone in ("x-bar", "keep-alive", "connection", "proxy-authenticate", "set-cookie"):
        assert gone not in r.headers, gone
    assert r.headers["access-control-allow-origin"] == "*"  # the gateway's CORS, not the engine's


def test_engine_header_is_allowed_by_cors(setup):
    client, _ = setup()
    r = client.simulate_options(API + "/anything", headers={
        "Origin": "https://app.flowork.cloud", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204
    assert "x-flowork-engine-id" in r.headers["access-control-allow-headers"].lower()
