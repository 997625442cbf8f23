"""The proxy's own limits: fairness bounds (engine_busy), loops (proxy_loop and the gateway's
own address), unusable stored URLs, and chunked answers in the public cache."""

from __future__ import annotations

import socket

import falcon.testing
import httpx
import pytest

from gateway_kernel import netpolicy
from tests.support.procs import GatewayProcess
from tests.support.upstreams import ENGINE_A, ENGINE_B, Resolver

API = "/api/v1"
PLUGINS = "auth_crypto,auth_internal,proxy"


@pytest.fixture
def build(make_gateway):
    def build(urls, settings=None):
        resolver = Resolver(urls, default=next(iter(urls)))
        gateway = make_gateway(plugins=PLUGINS, settings=settings, extra_plugins=[resolver])
        return gateway, falcon.testing.TestClient(gateway)

    return build


def open_stream(gateway, path, headers):
    """Start a proxied request through the WSGI app and leave its body unread (the exchange
    stays in flight until the body is closed, as when a client reads slowly)."""
    captured = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"] = status

    env = falcon.testing.create_environ(path=path, headers=headers)
    body = gateway(env, start_response)
    return captured["status"], body


def test_engine_busy_per_engine_and_released_on_close(build, upstream, auth):
    gateway, client = build({ENGINE_A: upstream.url, ENGINE_B: upstream.url},
                            {"FLOWORK_PROXY_MAX_PER_ENGINE": "2"})
    a = {**auth, "X-Flowork-Engine-ID": ENGINE_A}
    held = [open_stream(gateway, API + "/endless", a) for _ in range(2)]
    assert all(status.startswith("200") for status, _ in held)
    r = client.simulate_get(API + "/x", headers=a)
    assert r.status_code == 503
    assert r.json["code"] == "engine_busy"
    assert int(r.headers["retry-after"]) >= 1
    # another engine of the same user is not affected
    assert client.simulate_get(API + "/x", headers={**auth, "X-Flowork-Engine-ID": ENGINE_B}
                               ).status_code == 200
    # the client going away gives the place back
    held[0][1].close()
    assert client.simulate_get(API + "/x", headers=a).status_code == 200
    held[1][1].close()
    assert gateway.plugins["proxy"].forwarder.limits.in_flight(ENGINE_A) == 0


def test_engine_busy_per_user_leaves_other_users_alone(build, upstream, make_signer):
    alice, bob = make_signer(), make_signer()
    gateway, client = build({ENGINE_A: upstream.url, ENGINE_B: upstream.url},
                            {"FLOWORK_PROXY_MAX_PER_USER": "2",
                             "FLOWORK_PROXY_MAX_PER_ENGINE": "10"})
    held = [open_stream(gateway, API + "/endless", {**alice.headers(), "X-Flowork-Engine-ID": e})
            for e in (ENGINE_A, ENGINE_B)]
    r = client.simulate_get(API + "/x", headers=alice.headers())
    assert r.status_code == 503 and r.json["code"] == "engine_busy"
    assert "retry-after" in r.headers
    assert client.simulate_get(API + "/x", headers=bob.headers()).status_code == 200
    for _, body in held:
        body.close()
    assert client.simulate_get(API + "/x", headers=alice.headers()).status_code == 200


def test_places_are_given_back_on_every_exit_path(build, upstream, auth):
    """Errors, refusals, complete reads and bodiless answers all release their place."""
    gateway, client = build({ENGINE_A: upstream.url},
                            {"FLOWORK_PROXY_MAX_PER_ENGINE": "1",
                             "FLOWORK_PROXY_MAX_PER_USER": "1",
                             "FLOWORK_PROXY_READ_TIMEOUT_S": "0.2",
                             "FLOWORK_PROXY_BREAKER_FAILURES": "100"})
    for _ in range(3):
        assert client.simulate_get(API + "/hang", headers=auth).status_code == 504
        assert client.simulate_get(API + "/status/204", headers=auth).status_code == 204
        assert client.simulate_head(API + "/download", query_string="size=10",
                                    headers=auth).status_code == 200
        assert client.simulate_get(API + "/download", query_string="size=100000",
                                   headers=auth).status_code == 200
        assert client.simulate_get(API + "/x/../y", headers=auth).status_code == 404
    assert gateway.plugins["proxy"].forwarder.limits.in_flight(ENGINE_A) == 0


@pytest.mark.parametrize("via", ["1.1 flowork-gateway", "1.0 cdn, 1.1 flowork-gateway (x)",
                                 "HTTP/1.1 flowork-gateway"])
def test_request_that_passed_through_a_gateway_is_508(build, upstream, auth, via):
    _, client = build({ENGINE_A: upstream.url})
    r = client.simulate_get(API + "/x", headers={**auth, "Via": via})
    assert r.status_code == 508
    assert r.json["code"] == "proxy_loop"
    assert upstream.requests == []


def test_other_proxies_in_via_are_kept_and_we_are_added(build, upstream, auth):
    _, client = build({ENGINE_A: upstream.url})
    r = client.simulate_get(API + "/x", headers={**auth, "Via": "1.1 cdn.example"})
    assert r.status_code == 200
    assert upstream.last.header("via") == "1.1 cdn.example, 1.1 flowork-gateway"


def test_public_proxy_refuses_a_loop_too(make_gateway, upstream):
    gateway = make_gateway(plugins=PLUGINS, settings={"FLOWORK_PUBLIC_ENGINE_URL": upstream.url})
    r = falcon.testing.TestClient(gateway).simulate_get(
        API + "/news", headers={"Via": "1.1 flowork-gateway"})
    assert r.status_code == 508 and r.json["code"] == "proxy_loop"
    assert upstream.requests == []


@pytest.mark.parametrize("url", ["http://a..b", "http://" + "a" * 64 + ".example",
                                 "http://[v1.fe]", "http://[::1", "http://x:99999"])
def test_malformed_stored_url_is_502_and_feeds_the_breaker(build, auth, url):
    _, client = build({ENGINE_A: url}, {"FLOWORK_PROXY_BREAKER_FAILURES": "2"})
    for _ in range(2):
        r = client.simulate_get(API + "/x", headers=auth)
        assert r.status_code == 502, r.text
        assert r.json["code"] == "engine_unreachable"
    r = client.simulate_get(API + "/x", headers=auth)
    assert r.status_code == 503
    assert r.json["code"] == "engine_unavailable"
    assert "retry-after" in r.headers


def test_chunked_cacheable_answer_is_cached_when_it_fits(make_gateway, upstream):
    gateway = make_gateway(plugins=PLUGINS, settings={"FLOWORK_PUBLIC_ENGINE_URL": upstream.url,
                                                      "FLOWORK_PROXY_CACHE_ENTRY_BYTES": "4096"})
    client = falcon.testing.TestClient(gateway)
    q = "cc=max-age=60&chunked=1"
    first = client.simulate_get(API + "/news", query_string=q)
    second = client.simulate_get(API + "/news", query_string=q)
    assert first.status_code == second.status_code == 200
    assert upstream.hits["/news"] == 1
    assert second.content == first.content
    assert "age" in second.headers
    assert second.headers["content-length"] == str(len(first.content))


def test_chunked_answer_over_the_entry_limit_streams_whole_and_is_not_cached(make_gateway,
                                                                             upstream):
    gateway = make_gateway(plugins=PLUGINS, settings={"FLOWORK_PUBLIC_ENGINE_URL": upstream.url,
                                                      "FLOWORK_PROXY_CACHE_ENTRY_BYTES": "100"})
    client = falcon.testing.TestClient(gateway)
    q = "cc=max-age=60&chunked=1&pad=300"
    first = client.simulate_get(API + "/news", query_string=q)
    second = client.simulate_get(API + "/news", query_string=q)
    assert first.json["hit"] == 1 and second.json["hit"] == 2
    assert len(first.content) > 300


def test_engine_url_reaching_the_gateways_own_socket_is_refused_at_connect(build, upstream,
                                                                          auth):
    """The stub plays the gateway's own listening socket: never contacted, 502, breaker fed."""
    gateway, client = build({ENGINE_A: upstream.url})
    netpolicy.for_gateway(gateway).add_own_address("127.0.0.1", upstream.port)
    r = client.simulate_get(API + "/x", headers=auth)
    assert r.status_code == 502 and r.json["code"] == "engine_unreachable"
    assert upstream.requests == []


def online_engine(http, gw, signer, url):
    r = http.post(gw.url("/user/engines"), json={"name": "e"}, headers=signer.headers())
    assert r.status_code == 201, r.text
    return http.post(gw.url("/engine/heartbeat"), json={"url": url},
                     headers={"X-Engine-Token": r.json()["raw_token"]})


@pytest.mark.slow
def test_loops_through_a_real_server(tmp_path, upstream, make_signer):
    """A real ``serve`` (default server) and a real stub engine: the gateway's own URL is
    refused at registration (and, under another name, at connect); an engine that proxies
    back to the gateway meets 508 ``proxy_loop``; health stays fast throughout."""
    alice, bob = make_signer(), make_signer()
    with GatewayProcess.start({"DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}"},
                              log_dir=tmp_path) as gw, httpx.Client(timeout=30) as http:
        r = online_engine(http, gw, alice, gw.base)
        assert r.status_code == 400 and r.json()["code"] == "invalid_engine_url"

        upstream.reflect_to = gw.base
        assert online_engine(http, gw, bob, upstream.url).status_code == 200
        for _ in range(3):
            r = http.get(gw.url("/reflect/me"), headers=bob.headers())
            assert r.status_code == 508, r.text
            assert r.json()["code"] == "proxy_loop"
        assert len(upstream.requests) == 3  # one hop each, never a second round

        name = socket.gethostname()
        try:
            resolved = {info[4][0] for info in socket.getaddrinfo(name, gw.port)}
        except OSError:
            resolved = set()
        if resolved == {"127.0.0.1"}:  # a name for the gateway's own socket: refused at connect
            assert online_engine(http, gw, alice, f"http://{name}:{gw.port}").status_code == 200
            r = http.get(gw.url("/anything"), headers=alice.headers())
            assert r.status_code == 502, r.text
            assert r.json()["code"] == "engine_unreachable"
        health = http.get(gw.url("/system/health"))
        assert health.status_code == 200
        assert health.elapsed.total_seconds() < 2


@pytest.mark.parametrize("server", ["uvicorn", "waitress"])
def test_engine_busy_under_a_real_server_and_places_freed_when_clients_leave(
        build, upstream, auth, server):
    """Two clients hold exchanges open (the engine sent part of its answer and waits); a third
    is 503 engine_busy; when the holders hang up their places come back (under uvicorn without
    the engine sending another byte)."""
    import time

    from tests.support.upstreams import serve_app

    gateway, _ = build({ENGINE_A: upstream.url}, {"FLOWORK_PROXY_MAX_PER_ENGINE": "2"})
    limits = gateway.plugins["proxy"].forwarder.limits
    with serve_app(gateway, server) as served_by, httpx.Client(timeout=30) as http:
        url = served_by.base + API
        holders = []
        for _ in range(2):
            stream = http.stream("GET", url + "/gated", headers=auth)
            response = stream.__enter__()
            assert response.status_code == 200
            chunks = response.iter_raw()  # kept: dropping the iterator closes the connection
            assert next(chunks) == b"first"
            holders.append((stream, chunks))
        r = http.get(url + "/x", headers=auth)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "engine_busy"
        assert int(r.headers["retry-after"]) >= 1
        for stream, _ in holders:
            stream.__exit__(None, None, None)
        if server == "waitress":
            # A thread per exchange, blocked reading the engine: waitress notices the client
            # left only when the engine speaks again (the ASGI path watches for it).
            upstream.gate.set()
        deadline = time.monotonic() + 20
        while limits.in_flight(ENGINE_A) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert limits.in_flight(ENGINE_A) == 0, "places not given back after the clients left"
        assert http.get(url + "/x", headers=auth).status_code == 200


def test_client_giving_up_before_the_answer_frees_its_place_at_once(build, upstream, auth):
    """Under uvicorn a client that hangs up while the engine is still thinking cancels the
    exchange: its place comes back without waiting for the engine or a timeout."""
    import time

    from tests.support.upstreams import serve_app

    gateway, _ = build({ENGINE_A: upstream.url}, {"FLOWORK_PROXY_MAX_PER_ENGINE": "1"})
    limits = gateway.plugins["proxy"].forwarder.limits
    with serve_app(gateway, "uvicorn") as served_by:
        url = served_by.base + API
        with httpx.Client(timeout=1) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.get(url + "/hold", headers=auth)
        deadline = time.monotonic() + 10
        while limits.in_flight(ENGINE_A) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert limits.in_flight(ENGINE_A) == 0, "the abandoned exchange kept its place"
        with httpx.Client(timeout=30) as http:
            assert http.get(url + "/x", headers=auth).status_code == 200
        assert not upstream.gate.is_set()  # the engine never answered the first one
