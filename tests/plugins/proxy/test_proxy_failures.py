"""The authenticated proxy when engines misbehave: refused, hanging, dripping, flaky, broken
mid-stream; streaming without buffering; closing the engine when the client goes away."""

from __future__ import annotations

import falcon.testing
import pytest

from tests.support.upstreams import (
    ENGINE_A,
    ENGINE_B,
    FlakyServer,
    Resolver,
    UpstreamAborted,
    refused_url,
)

API = "/api/v1"
PLUGINS = "auth_crypto,auth_internal,proxy"


@pytest.fixture
def build(make_gateway):
    def build(urls, settings=None, static=False):
        resolver = Resolver(urls, default=next(iter(urls)), static=static)
        gateway = make_gateway(plugins=PLUGINS, settings=settings, extra_plugins=[resolver])
        return gateway, falcon.testing.TestClient(gateway)

    return build


def wsgi_get(gateway, path, headers, query=""):
    """Call the WSGI app directly: (status, headers, body iterable) without consuming it."""
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status
        captured["headers"] = dict((k.lower(), v) for k, v in headers)

    env = falcon.testing.create_environ(path=path, query_string=query, headers=headers)
    body = gateway(env, start_response)
    return captured["status"], captured["headers"], body


def test_refused_connection_is_502(build, auth):
    _, client = build({ENGINE_A: refused_url()})
    r = client.simulate_get(API + "/x", headers=auth)
    assert r.status_code == 502
    assert r.json["code"] == "engine_unreachable"


def test_hanging_engine_is_504(build, upstream, auth):
    _, client = build({ENGINE_A: upstream.url}, {"FLOWORK_PROXY_READ_TIMEOUT_S": "0.3"})
    r = client.simulate_get(API + "/hang", headers=auth)
    assert r.status_code == 504
    assert r.json["code"] == "engine_timeout"


def test_drip_fed_headers_hit_the_overall_deadline(build, upstream, auth):
    # Each byte comes well within the read timeout; only the overall deadline can stop it.
    _, client = build({ENGINE_A: upstream.url}, {"FLOWORK_PROXY_READ_TIMEOUT_S": "5",
                                                 "FLOWORK_PROXY_TIMEOUT_S": "0.5"})
    r = client.simulate_get(API + "/drip-headers", query_string="interval=0.02", headers=auth)
    assert r.status_code == 504
    assert r.json["code"] == "engine_timeout"


def test_drip_fed_body_within_limits_arrives_whole(build, upstream, auth):
    _, client = build({ENGINE_A: upstream.url})
    r = client.simulate_get(API + "/drip", query_string="n=5&interval=0.02", headers=auth)
    assert r.status_code == 200
    assert r.content == b"ddddd"


def test_drip_fed_body_beyond_the_cap_is_cut_off_not_completed(build, upstream, auth):
    gateway, _ = build({ENGINE_A: upstream.url}, {"FLOWORK_PROXY_READ_TIMEOUT_S": "5",
                                                  "FLOWORK_PROXY_MAX_DURATION_S": "0.3"})
    status, headers, body = wsgi_get(gateway, API + "/drip", auth, "n=1000&interval=0.02")
    assert status.startswith("200")
    assert headers["content-length"] == "1000"
    received = b""
    with pytest.raises(UpstreamAborted):
        for chunk in body:
            received += chunk
    body.close()
    assert len(received) < 1000  # the server drops the connection: the client sees truncation


def test_response_streams_before_the_engine_finishes(build, upstream, auth):
    gateway, _ = build({ENGINE_A: upstream.url})
    status, _, body = wsgi_get(gateway, API + "/gated", auth)
    assert status.startswith("200")
    chunks = iter(body)
    assert next(chunks) == b"first"  # the engine is still holding "second"
    upstream.gate.set()
    assert b"".join(chunks) == b"second"
    body.close()


def test_client_going_away_closes_the_engine_connection(build, upstream, auth):
    gateway, _ = build({ENGINE_A: upstream.url})
    status, _, body = wsgi_get(gateway, API + "/endless", auth)
    assert status.startswith("200")
    chunks = iter(body)
    next(chunks)
    next(chunks)
    body.close()  # what waitress does when the client disconnects
    assert upstream.disconnected.wait(20), "the engine never saw the disconnect"


def test_engine_errors_mid_stream_do_not_leak_a_500_page(build, upstream, auth):
    # a 5xx from the engine is an answer, passed through unchanged
    _, client = build({ENGINE_A: upstream.url})
    r = client.simulate_get(API + "/status/500", headers=auth)
    assert r.status_code == 500
    assert r.json == {"status": 500}


def test_circuit_breaker_short_circuits_one_engine_only(build, upstream, auth):
    gateway, client = build({ENGINE_A: refused_url(), ENGINE_B: upstream.url},
                            {"FLOWORK_PROXY_BREAKER_FAILURES": "2",
                             "FLOWORK_PROXY_BREAKER_COOLDOWN_S": "30"})
    a = {**auth, "X-Flowork-Engine-ID": ENGINE_A}
    b = {**auth, "X-Flowork-Engine-ID": ENGINE_B}
    assert client.simulate_get(API + "/x", headers=a).json["code"] == "engine_unreachable"
    assert client.simulate_get(API + "/x", headers=a).json["code"] == "engine_unreachable"
    r = client.simulate_get(API + "/x", headers=a)
    assert r.status_code == 503
    assert r.json["code"] == "engine_unavailable"
    assert 1 <= int(r.headers["retry-after"]) <= 30
    # another engine is unaffected
    assert client.simulate_get(API + "/x", headers=b).status_code == 200

    # after the cool-down the engine is tried again; one more failure re-opens at once
    breaker = gateway.plugins["proxy"].forwarder.breaker
    now = breaker.clock()
    breaker.clock = lambda: now + 31
    assert client.simulate_get(API + "/x", headers=a).json["code"] == "engine_unreachable"
    assert client.simulate_get(API + "/x", headers=a).json["code"] == "engine_unavailable"


def test_breaker_closes_again_after_a_success(build, upstream, auth):
    gateway, client = build({ENGINE_A: upstream.url},
                            {"FLOWORK_PROXY_BREAKER_FAILURES": "2",
                             "FLOWORK_PROXY_READ_TIMEOUT_S": "0.2"})
    assert client.simulate_get(API + "/hang", headers=auth).status_code == 504
    assert client.simulate_get(API + "/hang", headers=auth).status_code == 504
    seen = len(upstream.requests)
    assert client.simulate_get(API + "/x", headers=auth).json["code"] == "engine_unavailable"
    assert len(upstream.requests) == seen  # short-circuited: the engine was not asked
    breaker = gateway.plugins["proxy"].forwarder.breaker
    now = breaker.clock()
    breaker.clock = lambda: now + 60
    assert client.simulate_get(API + "/x", headers=auth).status_code == 200
    assert client.simulate_get(API + "/hang", headers=auth).status_code == 504
    assert client.simulate_get(API + "/x", headers=auth).status_code == 200  # 1 failure < 2


def test_idempotent_bodyless_request_is_retried_once(build, auth):
    with FlakyServer(["drop", "ok"]) as flaky:
        _, client = build({ENGINE_A: flaky.url})
        r = client.simulate_get(API + "/x", headers=auth)
        assert r.status_code == 200
        assert r.content == b"ok"
        assert flaky.accepted == 2


def test_request_with_body_is_never_retried(build, auth):
    with FlakyServer(["drop", "ok"]) as flaky:
        _, client = build({ENGINE_A: flaky.url})
        r = client.simulate_post(API + "/x", headers=auth, body=b'{"run": 1}')
        assert r.status_code == 502
        assert r.json["code"] == "engine_unreachable"
        assert flaky.accepted == 1


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://[fe80::1]:8080/",
                                 "http://0.0.0.0:9/", "ftp://127.0.0.1/", "http://u:p@127.0.0.1/"])
def test_forbidden_engine_addresses_are_never_contacted(build, auth, url):
    _, client = build({ENGINE_A: url})
    r = client.simulate_get(API + "/x", headers=auth)
    assert r.status_code == 502
    assert r.json["code"] == "engine_unreachable"


def test_upstream_outcomes_and_open_breakers_are_in_the_metrics(build, upstream, auth):
    gateway, client = build({ENGINE_A: refused_url(), ENGINE_B: upstream.url},
                            {"FLOWORK_PROXY_BREAKER_FAILURES": "1",
                             "FLOWORK_PROXY_BREAKER_COOLDOWN_S": "30"})
    assert client.simulate_get(API + "/x", headers={**auth, "X-Flowork-Engine-ID": ENGINE_B}
                               ).status_code == 200
    r = client.simulate_get(API + "/x", headers={**auth, "X-Flowork-Engine-ID": ENGINE_A})
    assert r.json["code"] == "engine_unreachable"
    registry = gateway.metrics.registry
    count = "flowork_proxy_upstream_seconds_count"
    assert registry.get_sample_value(count, {"outcome": "ok"}) == 1
    assert registry.get_sample_value(count, {"outcome": "unreachable"}) == 1
    assert registry.get_sample_value("flowork_proxy_breakers_open") == 1
