"""The kernel's ASGI face (Gateway.asgi): same answers as WSGI, plugin code in the bounded
pool, bodies read only after authentication, the ASGI middleware hook and async sinks."""

from __future__ import annotations

import asyncio
import io
import threading

import falcon
import falcon.testing
import pytest

from gateway_kernel import GatewayPlugin, Route, Sink, hookimpl
from gateway_kernel.http import body_stream, read_json, send_json
from tests.support.kernel_plugins import NotesPlugin, TwoSchemesPlugin


class EchoSocket:
    """gateway_asgi_middleware: answers WebSocket scopes on /ws with an echo, passes the rest."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "websocket" or scope["path"] != "/ws":
            await self.app(scope, receive, send)
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + event.get("text", "")})


class Probe:
    """A route recording which thread ran it, and what body it read."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def on_get(self, req, resp) -> None:
        self.threads.append(threading.current_thread().name)
        send_json(resp, {"ok": True})

    def on_post(self, req, resp) -> None:
        self.threads.append(threading.current_thread().name)
        send_json(resp, {"got": read_json(req)})


class AsgiPlugin(GatewayPlugin):
    name = "asgi_probe"
    version = "1"

    def __init__(self, order: list[str] | None = None, tag: str = "outer") -> None:
        self.probe = Probe()
        self.order = order if order is not None else []
        self.tag = tag
        self.sink_bodies: list[bytes] = []

    @hookimpl
    def gateway_routes(self, gateway):
        return [Route("/probe", self.probe, "user")]

    @hookimpl
    def gateway_sinks(self, gateway):
        plugin = self

        def sync_handler(req, resp, path):
            resp.content_type = "text/plain"
            resp.stream = iter([b"sync ", path.encode(), b" ", threading.current_thread().name.encode()])

        async def async_handler(req, resp, path):
            body = b"".join([chunk async for chunk in req.stream])
            plugin.sink_bodies.append(body)

            async def chunks():
                for part in (b"async ", path.encode(), b" ", str(len(body)).encode()):
                    yield part

            resp.content_type = "text/plain"
            resp.stream = chunks()

        def file_handler(req, resp, path):
            resp.content_type = "application/octet-stream"
            resp.stream = io.BytesIO(b"f" * 200_000)  # a blocking file-like object

        def count_handler(req, resp, path):
            stream, total, reads = body_stream(req), 0, 0
            while chunk := stream.read(100_000):
                total += len(chunk)
                reads += 1
            send_json(resp, {"total": total, "reads": reads,
                             "thread": threading.current_thread().name})

        return [Sink("/stream", sync_handler, "user"), Sink("/file", file_handler, "user"),
                Sink("/count", count_handler, "user"),
                Sink("/live", sync_handler, "user", async_handler=async_handler)]

    @hookimpl
    def gateway_asgi_middleware(self, gateway, app):
        self.order.append(self.tag)
        return EchoSocket(app)


@pytest.fixture
def probe_gateway(make_gateway):
    plugin = AsgiPlugin()
    gateway = make_gateway(plugins="none", extra_plugins=[TwoSchemesPlugin(), NotesPlugin(), plugin])
    return gateway, plugin


GOOD = {"X-Alpha": "good"}


def test_plugin_code_runs_in_the_bounded_pool(probe_gateway):
    gateway, plugin = probe_gateway
    client = falcon.testing.TestClient(gateway.asgi)
    assert client.simulate_get("/api/v1/probe", headers=GOOD).status_code == 200
    r = client.simulate_post("/api/v1/probe", headers=GOOD, json={"a": 1})
    assert r.status_code == 200 and r.json == {"got": {"a": 1}}
    assert all(name.startswith("flowork-worker") for name in plugin.probe.threads)
    assert gateway.pool.size == gateway.worker_threads == 4


def test_body_is_not_read_before_authentication_and_declared_length_is_checked(probe_gateway):
    gateway, plugin = probe_gateway
    client = falcon.testing.TestClient(gateway.asgi)
    r = client.simulate_post("/api/v1/probe", body=b'{"a": 1}', headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.json["code"] == "missing_alpha"
    big = gateway.max_body + 1
    r = client.simulate_post("/api/v1/probe", body=b"x" * big, headers=GOOD)
    assert r.status_code == 413 and r.json["code"] == "body_too_large"
    assert plugin.probe.threads == []  # the responder never ran


def test_errors_cors_and_preflight_match_the_wsgi_app(probe_gateway):
    gateway, _plugin = probe_gateway
    asgi = falcon.testing.TestClient(gateway.asgi)
    wsgi = falcon.testing.TestClient(gateway)
    wsgi.gateway = None  # the conftest swaps a Gateway for its configured app: keep WSGI here
    wsgi.app = gateway
    for method, path, headers in [("GET", "/api/v1/probe", {}), ("GET", "/api/v1/probe", {"X-Alpha": "x"}),
                                  ("GET", "/api/v1/nothing/here", {}), ("DELETE", "/api/v1/notes", {}),
                                  ("OPTIONS", "/api/v1/probe", {}), ("GET", "/api/v1/system/health", {})]:
        a = asgi.simulate_request(method, path, headers=headers)
        w = wsgi.simulate_request(method, path, headers=headers)
        assert (a.status_code, a.text) == (w.status_code, w.text), (method, path)
        for name in ("content-type", "access-control-allow-origin", "access-control-allow-headers"):
            assert a.headers.get(name) == w.headers.get(name), (method, path, name)
        assert a.headers["x-request-id"]


def test_database_down_is_503_on_asgi_too(make_gateway):
    from gateway_kernel import create_gateway

    down = create_gateway(environ={}, settings={
        "FLOWORK_PLUGINS": "none", "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x",
        "FLOWORK_DB_POOL_TIMEOUT_S": "1"}, extra_plugins=[NotesPlugin(migrations=[])])
    try:
        client = falcon.testing.TestClient(down.asgi)
        r = client.simulate_get("/api/v1/system/health")
        assert r.status_code == 503 and r.json == {"status": "unhealthy", "database": "disconnected"}
        r = client.simulate_get("/api/v1/notes")
        assert r.status_code == 503 and r.json["code"] == "database_unavailable"
    finally:
        down.close()


def test_sync_sink_streams_from_the_pool_and_async_sink_runs_on_the_loop(probe_gateway):
    gateway, plugin = probe_gateway
    client = falcon.testing.TestClient(gateway.asgi)
    r = client.simulate_get("/api/v1/stream/a/b", headers=GOOD)
    assert r.status_code == 200 and r.text.startswith("sync /stream/a/b flowork-worker")
    r = client.simulate_post("/api/v1/live/x", headers=GOOD, body=b"z" * 5000)
    assert r.status_code == 200 and r.text == "async /live/x 5000"
    assert plugin.sink_bodies == [b"z" * 5000]
    r = client.simulate_post("/api/v1/live/x", body=b"z")
    assert r.status_code == 401 and plugin.sink_bodies == [b"z" * 5000]
    r = client.simulate_get("/api/v1/file", headers=GOOD)
    assert r.status_code == 200 and r.content == b"f" * 200_000
    # A sync sink reads the body from the loop as it asks for it (not read beforehand).
    r = client.simulate_post("/api/v1/count", headers=GOOD, body=b"u" * 900_000)
    assert r.status_code == 200 and r.json["total"] == 900_000 and r.json["reads"] == 9
    assert r.json["thread"].startswith("flowork-worker")


def test_asgi_middleware_wraps_in_load_order_and_serves_websocket(make_gateway):
    order: list[str] = []
    first, second = AsgiPlugin(order, "first"), AsgiPlugin(order, "second")
    second.name = "asgi_probe_2"  # type: ignore[misc]
    second.gateway_routes = lambda gateway: []  # type: ignore[method-assign]
    second.gateway_sinks = lambda gateway: []  # type: ignore[method-assign]
    gateway = make_gateway(plugins="none", extra_plugins=[TwoSchemesPlugin(), first, second])
    app = gateway.asgi
    assert order == ["first", "second"] and gateway.asgi is app  # built once
    assert isinstance(app, EchoSocket) and isinstance(app.app, EchoSocket)

    async def talk() -> str:
        async with falcon.testing.ASGIConductor(app) as conductor:
            assert gateway.loop is asyncio.get_running_loop()
            async with conductor.simulate_ws("/ws") as ws:
                await ws.send_text("hi")
                return await ws.receive_text()

    assert falcon.async_to_sync(talk) == "echo:hi"


def test_lifespan_starts_and_closes_a_gateway_it_started(make_gateway, gateway_database_url):
    from gateway_kernel import create_gateway
    from tests.support.kernel_plugins import LifecyclePlugin

    plugin = LifecyclePlugin()
    gateway = create_gateway(environ={}, settings={"FLOWORK_PLUGINS": "none",
                                                   "DATABASE_URL": gateway_database_url},
                             extra_plugins=[plugin])
    gateway.migrate()

    async def serve_once() -> int:
        async with falcon.testing.ASGIConductor(gateway.asgi) as conductor:
            assert plugin.events == ["startup"] and gateway.loop is not None
            return (await conductor.simulate_get("/api/v1/system/health")).status_code

    assert falcon.async_to_sync(serve_once) == 200
    assert plugin.events[-1] == "shutdown"
    gateway.close()
    assert plugin.events.count("shutdown") == 1  # close is idempotent


def test_run_sync_activates_the_database_and_propagates_errors(probe_gateway):
    gateway, _plugin = probe_gateway
    from gateway_kernel.db import database

    async def run():
        same = await gateway.run_sync(lambda: database._target() is gateway.db)
        with pytest.raises(ZeroDivisionError):
            await gateway.run_sync(lambda: 1 / 0)
        return same

    assert asyncio.run(run()) is True
