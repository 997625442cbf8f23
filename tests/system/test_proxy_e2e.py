"""End to end: the bundled plugins (real engines and sharing resolving the target), and the
gateway under each real server (uvicorn: the ASGI app; waitress: the WSGI app) with a real
HTTP client."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.support.upstreams import Upstream, pattern_sha256, serve_app

SERVERS = ["uvicorn", "waitress"]

API = "/api/v1"


def create_online_engine(client, signer, url, name="engine"):
    r = client.simulate_post(API + "/user/engines", json={"name": name}, headers=signer.headers())
    assert r.status_code == 201, r.text
    engine = r.json
    r = client.simulate_post(API + "/engine/heartbeat", json={"url": url},
                             headers={"X-Engine-Token": engine["raw_token"]})
    assert r.status_code == 200, r.text
    return engine


def test_proxy_through_the_engines_plugin(client, upstream, make_signer):
    owner, guest = make_signer(), make_signer()
    engine = create_online_engine(client, owner, upstream.url)

    # the owner's most recently seen online engine is the default target
    r = client.simulate_get(API + "/workflows", headers=owner.headers())
    assert r.status_code == 200, r.text
    seen = upstream.last
    assert seen.target == "/api/v1/workflows"
    assert seen.header("x-flowork-engine-id") == engine["id"]
    assert seen.header("x-flowork-user-id") == owner.address

    # another user: no engine of their own, and the owner's is not theirs
    r = client.simulate_get(API + "/workflows", headers=guest.headers())
    assert r.status_code == 503 and r.json["code"] == "engine_offline"
    assert "retry-after" in r.headers
    r = client.simulate_get(API + "/workflows",
                            headers={**guest.headers(), "X-Flowork-Engine-ID": engine["id"]})
    assert r.status_code == 404 and r.json["code"] == "not_found"
    r = client.simulate_get(API + "/workflows",
                            headers={**guest.headers(), "X-Flowork-Engine-ID": "not-a-uuid"})
    assert r.status_code == 404
    assert len(upstream.requests) == 1

    # once shared, the guest reaches it, and the engine learns who is asking
    r = client.simulate_post(API + f"/engines/{engine['id']}/shares",
                             json={"share_with_identifier": guest.address},
                             headers=owner.headers())
    assert r.status_code == 201, r.text
    r = client.simulate_get(API + "/workflows",
                            headers={**guest.headers(), "X-Flowork-Engine-ID": engine["id"]})
    assert r.status_code == 200
    assert upstream.last.header("x-flowork-user-id") == guest.address


def test_static_engine_url_from_configuration(make_gateway, upstream, signer):
    import falcon.testing

    probe = make_gateway()
    c = falcon.testing.TestClient(probe)
    engine = c.simulate_post(API + "/user/engines", json={"name": "static"},
                             headers=signer.headers()).json
    # a second instance on the same database, configured with a static URL for this engine
    gateway = make_gateway(settings={"FLOWORK_ENGINE_URLS": f"{engine['id']}={upstream.url}"})
    r = falcon.testing.TestClient(gateway).simulate_get(
        API + "/x", headers={**signer.headers(), "X-Flowork-Engine-ID": engine["id"]})
    assert r.status_code == 200  # routable without any heartbeat
    assert upstream.last.header("x-flowork-engine-id") == engine["id"]


@pytest.fixture(params=SERVERS)
def served(request, gateway, client, upstream, signer):
    """(base URL, signed headers) of the bundled gateway under each server, engine online."""
    create_online_engine(client, signer, upstream.url)
    with serve_app(gateway, request.param) as served_by:
        yield served_by.base + API, signer.headers()


def test_large_download_and_upload_by_hash(served):
    base, auth = served
    size = 24 * 1024 * 1024 + 11
    with httpx.Client(timeout=60) as http:
        digest = hashlib.sha256()
        with http.stream("GET", base + "/download", params={"size": size}, headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(size)
            for chunk in r.iter_raw():
                digest.update(chunk)
        assert digest.hexdigest() == pattern_sha256(size)

        def body():
            yield from (hashlib.sha256(bytes([i % 256])).digest() * 2048 for i in range(400))

        expected = hashlib.sha256(b"".join(body())).hexdigest()
        r = http.post(base + "/upload", content=body(), headers=auth)  # chunked from the client
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == expected
        assert r.json()["length"] == 400 * 32 * 2048


def test_connection_named_headers_stripped_both_ways(served, upstream):
    base, auth = served
    with httpx.Client(timeout=30) as http:
        r = http.get(base + "/connection", headers={**auth, "Connection": "X-Foo",
                                                    "X-Foo": "hop", "X-Keep": "me"})
    assert r.status_code == 200
    assert "x-foo" not in upstream.last.names()
    assert upstream.last.header("x-keep") == "me"
    assert "x-bar" not in r.headers and "keep-alive" not in r.headers
    assert r.headers["x-kept"] == "yes"


def test_gzip_byte_identical(served):
    from tests.support.upstreams import GZIP_BODY

    base, auth = served
    with httpx.Client(timeout=30) as http, http.stream(
        "GET", base + "/gzip", headers={**auth, "Accept-Encoding": "gzip"}
    ) as r:
        raw = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip"
    assert raw == GZIP_BODY


def test_client_disconnect_closes_engine_connection(served, upstream):
    base, auth = served
    with httpx.Client(timeout=30) as http, http.stream("GET", base + "/endless",
                                                        headers=auth) as r:
        assert r.status_code == 200
        received = 0
        for chunk in r.iter_raw():
            received += len(chunk)
            if received > 1024 * 1024:
                break
    # leaving the block closed the client's connection mid-body
    assert upstream.disconnected.wait(30), "the engine never saw the client go away"


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("chunked", ["0", "1"])
def test_engine_cut_off_mid_body_reaches_the_client_as_truncated(
        make_gateway, upstream, signer, chunked, server):
    import falcon.testing

    gateway = make_gateway(settings={"FLOWORK_PROXY_MAX_DURATION_S": "0.5",
                                     "FLOWORK_PROXY_READ_TIMEOUT_S": "5"})
    create_online_engine(falcon.testing.TestClient(gateway), signer, upstream.url)
    with serve_app(gateway, server) as served_by, httpx.Client(timeout=30) as http:
        with pytest.raises(httpx.RemoteProtocolError), http.stream(
            "GET", served_by.base + API + "/drip", headers=signer.headers(),
            params={"n": "500", "interval": "0.01", "chunked": chunked},
        ) as r:
            assert r.status_code == 200
            for _ in r.iter_raw():  # never a complete-looking body
                pass


@pytest.mark.parametrize("server", SERVERS)
def test_database_connection_is_released_while_the_engine_thinks(make_gateway, upstream, signer,
                                                                 server):
    """With a pool of one connection, a request waiting on its engine must not starve every
    other request of the database (meaningful on PostgreSQL, where connections are pooled)."""
    import threading

    import falcon.testing

    gateway = make_gateway(settings={"FLOWORK_DB_POOL_SIZE": "1", "FLOWORK_DB_POOL_TIMEOUT_S": "1"})
    create_online_engine(falcon.testing.TestClient(gateway), signer, upstream.url)
    with serve_app(gateway, server) as served_by, httpx.Client(timeout=30) as http:
        results = {}

        def fetch() -> None:
            try:
                results["slow"] = http.get(served_by.base + API + "/hold", headers=signer.headers())
            except httpx.HTTPError as exc:  # reported by the assertion below
                results["slow"] = exc

        slow = threading.Thread(target=fetch)
        slow.start()
        try:
            for _ in range(300):  # wait until the engine holds the request
                if any(r.target.endswith("/hold") for r in upstream.requests):
                    break
                threading.Event().wait(0.02)
            r = http.get(served_by.base + API + "/user/engines", headers=signer.headers())
            assert r.status_code == 200, r.text
        finally:
            upstream.gate.set()
            slow.join(30)
        assert isinstance(results.get("slow"), httpx.Response), results
        assert results["slow"].status_code == 200


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("trusted", ["127.0.0.0/8", ""])
def test_forwarded_headers_follow_trusted_proxies(make_gateway, upstream, signer, trusted, server):
    import falcon.testing

    gateway = make_gateway(settings={"FLOWORK_TRUSTED_PROXIES": trusted})
    create_online_engine(falcon.testing.TestClient(gateway), signer, upstream.url)
    with serve_app(gateway, server) as served_by, httpx.Client(timeout=30) as http:
        r = http.get(served_by.base + API + "/x", headers={
            **signer.headers(), "X-Forwarded-For": "198.51.100.9",
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "flowork.cloud"})
    assert r.status_code == 200
    seen = upstream.last
    if trusted:
        assert seen.header("x-forwarded-for") == "198.51.100.9, 127.0.0.1"
        assert seen.header("x-forwarded-proto") == "https"
        assert seen.header("x-forwarded-host") == "flowork.cloud"
    else:
        assert seen.header("x-forwarded-for") == "127.0.0.1"
        assert seen.header("x-forwarded-proto") == "http"
        assert seen.header("x-forwarded-host") == f"127.0.0.1:{served_by.port}"


def test_server_sent_events_arrive_event_by_event(served, upstream):
    base, auth = served
    with httpx.Client(timeout=30) as http, http.stream("GET", base + "/sse", headers=auth) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        received = b""
        chunks = r.iter_raw()
        while b"data: 1\n\n" not in received:  # the engine holds event 2 until the gate opens
            received += next(chunks)
        assert b"data: 2" not in received
        upstream.gate.set()
        for chunk in chunks:
            received += chunk
    assert received == b"data: 1\n\ndata: 2\n\n"


def test_hanging_engine_holds_no_worker_thread(make_gateway, upstream, make_signer):
    """Under the ASGI server an exchange waiting on its engine holds no thread: with two
    worker threads, eight requests hanging on one user's engine leave health and another
    user's proxied request as fast as ever."""
    import threading

    import falcon.testing

    slow, other = make_signer(), make_signer()
    gateway = make_gateway(settings={"FLOWORK_WORKER_THREADS": "2"})
    client = falcon.testing.TestClient(gateway)
    create_online_engine(client, slow, upstream.url, name="slow")
    with Upstream() as fast:
        create_online_engine(client, other, fast.url, name="fast")
        with serve_app(gateway, "uvicorn") as served_by, httpx.Client(timeout=30) as http:
            base = served_by.base + API

            def hang() -> None:
                try:
                    http.get(base + "/hold", headers=slow.headers())
                except httpx.HTTPError:
                    pass

            threads = [threading.Thread(target=hang) for _ in range(8)]
            for thread in threads:
                thread.start()
            try:
                for _ in range(300):  # until the engine holds all eight
                    if sum(r.target.endswith("/hold") for r in upstream.requests) >= 8:
                        break
                    threading.Event().wait(0.02)
                assert sum(r.target.endswith("/hold") for r in upstream.requests) == 8
                health = http.get(base + "/system/health")
                assert health.status_code == 200
                r = http.get(base + "/x", headers=other.headers())
                assert r.status_code == 200, r.text
                assert r.elapsed.total_seconds() < 5
            finally:
                upstream.gate.set()
                for thread in threads:
                    thread.join(30)
