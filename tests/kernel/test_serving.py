"""The default server (``flowork-gateway serve``, uvicorn) as real processes over sockets:
slow peers cost memory, not capacity; bodies are not read before authentication; graceful
stop; WebSocket on the REST port through a plugin's ASGI wrapper.

Timeouts are shortened through settings; every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway_plugins.auth_crypto.signing import Signer
from tests.support.procs import GatewayProcess
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.no_openapi_check

API = "/api/v1"


def recv_all(sock: socket.socket, limit_s: float) -> bytes:
    """Read until the server closes the connection (or ``limit_s`` passes)."""
    sock.settimeout(limit_s)
    chunks = []
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def health_latencies(gateway: GatewayProcess, count: int) -> list[float]:
    """``count`` health checks, each on a new connection (as a load balancer does)."""
    latencies = []
    for _ in range(count):
        start = time.monotonic()
        r = httpx.get(gateway.url("/system/health"), timeout=10)
        latencies.append(time.monotonic() - start)
        assert r.status_code == 200
        time.sleep(0.02)
    return latencies


@dataclass
class Served:
    gateway: GatewayProcess
    upstream: Upstream
    headers: dict[str, str]
    tmp: Path


def start(tmp: Path, upstream: Upstream, **settings: str) -> tuple[GatewayProcess, dict[str, str]]:
    """A uvicorn gateway whose signed-in user owns one online engine (the upstream)."""
    env = {
        "DATABASE_URL": f"sqlite:///{(tmp / 'gateway.db').as_posix()}",
        "FLOWORK_ENGINE_NETWORKS": "127.0.0.0/8",
        "TMPDIR": str(tmp / "spool"),
        **settings,
    }
    (tmp / "spool").mkdir(exist_ok=True)
    gateway = GatewayProcess.start(env, log_dir=tmp, threads=4, server="uvicorn")
    try:
        owner = Signer.new()
        headers = owner.headers(timestamp=int(time.time()) + 10)  # within the 15 s skew
        r = httpx.post(gateway.url("/user/engines"), json={"name": "up"}, headers=headers)
        assert r.status_code == 201, r.text
        r = httpx.post(gateway.url("/engine/heartbeat"), json={"url": upstream.url},
                       headers={"X-Engine-Token": r.json()["raw_token"]})
        assert r.status_code == 200, r.text
    except BaseException:
        gateway.stop()
        raise
    return gateway, headers


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serving")
    with Upstream() as upstream:
        gateway, headers = start(tmp, upstream, FLOWORK_SERVER_HEADER_TIMEOUT_S="3",
                                 FLOWORK_SERVER_IDLE_TIMEOUT_S="2",
                                 FLOWORK_SERVER_MAX_CONNECTIONS="200")
        with gateway:
            yield Served(gateway, upstream, headers, tmp)
            assert "Traceback" not in gateway.log_text(), gateway.log_tail()


def test_slow_headers_do_not_stop_health_or_lock_out_new_clients(served):
    """300 connections dribbling a request head (above the 200-connection bound): health
    stays fast, a new client is served, and the slow ones are answered 408 at the timeout."""
    port = served.gateway.port
    slow: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /api/v1/system/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(sock)
        latencies = health_latencies(served.gateway, 40)
        # Fast means "not waiting for the slow peers" (which hold on for seconds): generous
        # bounds, the machine is shared.
        assert max(latencies) < 3.0, latencies
        r = httpx.get(served.gateway.url("/user/engines"), headers=served.headers, timeout=10)
        assert r.status_code == 200 and len(r.json()) == 1
        # The newest slow connections that survived the bound get the 408 envelope.
        answer = recv_all(slow[-1], 10)
        assert answer.startswith(b"HTTP/1.1 408") and b'"code": "request_timeout"' in answer
    finally:
        for sock in slow:
            sock.close()


def test_the_connection_bound_closes_the_oldest_idle_connections_first(served):
    port = served.gateway.port
    idle: list[socket.socket] = []
    try:
        for _ in range(250):  # connected, nothing sent: idle from the server's point of view
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        assert recv_all(idle[0], 2) == b""  # the oldest were closed to make room
        r = httpx.get(served.gateway.url("/system/health"), timeout=5)
        assert r.status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(served):
    with socket.create_connection(("127.0.0.1", served.gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/system/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        deadline = time.monotonic() + 10
        while not first.endswith(b'"connected"}') and time.monotonic() < deadline:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert recv_all(sock, 10) == b""
        assert 1.0 < time.monotonic() - start < 8.0


def test_server_errors_answer_the_json_envelope(served):
    port = served.gateway.port
    for data, status, code in [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, b"invalid_request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n", 431,
         b"headers_too_large"),
    ]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = recv_all(sock, 5)
        assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:100]
        assert b"application/json" in answer and b'"code": "' + code + b'"' in answer


def spool_files(served: Served) -> list[str]:
    return [str(p) for p in (served.tmp / "spool").rglob("*")]


@pytest.mark.parametrize("path", ["/user/engines", "/some/proxied/path"])
def test_an_anonymous_huge_body_is_refused_at_once_and_never_read(served, path):
    with socket.create_connection(("127.0.0.1", served.gateway.port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(f"POST {API}{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 300000000\r\n\r\n".encode() + b"x" * 65536)
        answer = recv_all(sock, 5)
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert elapsed < 2.0
    assert spool_files(served) == []


def test_a_declared_length_above_the_limit_is_413_before_reading(served):
    with socket.create_connection(("127.0.0.1", served.gateway.port), timeout=5) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in served.headers.items())
        sock.sendall(f"POST {API}/user/engines HTTP/1.1\r\nHost: x\r\n{head}"
                     "Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n".encode())
        answer = recv_all(sock, 5)
    assert answer.startswith(b"HTTP/1.1 413") and b'"body_too_large"' in answer, answer[:200]
    assert spool_files(served) == []


def test_a_request_body_that_stops_arriving_is_a_408(served):
    with socket.create_connection(("127.0.0.1", served.gateway.port), timeout=5) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in served.headers.items())
        sock.sendall(f"POST {API}/user/engines HTTP/1.1\r\nHost: x\r\n{head}"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na".encode())
        start = time.monotonic()
        answer = recv_all(sock, 15)
    assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer, answer[:200]
    assert 1.0 < time.monotonic() - start < 12.0


def test_health_stays_fast_under_200_hanging_proxied_requests(served):
    """200 requests to an engine that never answers: health is answered on the event loop
    (its database probe has a thread of its own), so it stays fast."""
    hanging: list[socket.socket] = []
    head = "".join(f"{k}: {v}\r\n" for k, v in served.headers.items())
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", served.gateway.port), timeout=5)
            sock.sendall(f"GET {API}/hang HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
            hanging.append(sock)
        time.sleep(1.0)
        latencies = health_latencies(served.gateway, 60)
        assert max(latencies) < 3.0, latencies  # the engine never answers: not waiting on it
    finally:
        for sock in hanging:
            sock.close()
        served.upstream.release.set()
        time.sleep(0.5)
        served.upstream.release.clear()


def test_websocket_upgrade_reaches_a_plugins_asgi_wrapper(tmp_path):
    from websockets.sync.client import connect

    with GatewayProcess.start({
        "DATABASE_URL": f"sqlite:///{(tmp_path / 'gateway.db').as_posix()}",
        "FLOWORK_PLUGINS": "bundled,hello",
    }, log_dir=tmp_path, threads=2, server="uvicorn") as gateway:
        with connect(f"ws://127.0.0.1:{gateway.port}{API}/hello/echo", open_timeout=10) as ws:
            ws.send("over the REST port")
            assert ws.recv(timeout=10) == "over the REST port"
        assert httpx.get(gateway.url("/system/health")).status_code == 200


def test_sigterm_drains_in_flight_requests_runs_shutdown_hooks_and_exits_0(tmp_path):
    with Upstream() as upstream:
        gateway, headers = start(tmp_path, upstream, FLOWORK_SERVER_STOP_TIMEOUT_S="20")
        with gateway:
            result: dict[str, object] = {}

            def slow_request() -> None:
                r = httpx.get(gateway.url("/hold"), headers=headers, timeout=30)
                result["status"] = r.status_code

            thread = threading.Thread(target=slow_request)
            thread.start()
            deadline = time.monotonic() + 10
            while not any(s.target.endswith("/hold") for s in upstream.requests):
                assert time.monotonic() < deadline, "the request never reached the engine"
                time.sleep(0.05)
            gateway.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert gateway.proc.poll() is None  # still draining
            with pytest.raises(httpx.HTTPError):  # no longer accepting
                httpx.get(gateway.url("/system/health"), timeout=2)
            upstream.gate.set()  # the engine answers now
            thread.join(15)
            assert result.get("status") == 200
            assert gateway.proc.wait(20) == 0
            log = gateway.log_text()
            assert "gateway closed (shutdown hooks done)" in log and "Traceback" not in log


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_sigint_also_stops_gracefully(tmp_path):
    with GatewayProcess.start({"DATABASE_URL": f"sqlite:///{(tmp_path / 'g.db').as_posix()}"},
                              log_dir=tmp_path, threads=2, server="uvicorn") as gateway:
        gateway.proc.send_signal(signal.SIGINT)
        assert gateway.proc.wait(20) == 0
        assert "gateway closed (shutdown hooks done)" in gateway.log_text()


def test_waitress_without_the_proxy_refuses_a_large_body_before_spooling_it(tmp_path):
    """Under --server waitress nothing authenticates before the body is received: without the
    proxy, the server admits nothing above the JSON limit, so nothing is spooled."""
    (tmp_path / "spool").mkdir()
    with GatewayProcess.start({
        "DATABASE_URL": f"sqlite:///{(tmp_path / 'g.db').as_posix()}",
        "FLOWORK_PLUGINS": "auth_crypto,auth_internal,engines", "TMPDIR": str(tmp_path / "spool"),
    }, log_dir=tmp_path, threads=2, server="waitress") as gateway:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            start_at = time.monotonic()
            sock.sendall(f"POST {API}/user/engines HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 300000000\r\n\r\n".encode() + b"x" * 65536)
            answer = recv_all(sock, 5)
        assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - start_at < 2.0
        assert list((tmp_path / "spool").rglob("*")) == []


class _RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_the_coalescing_transport_sends_small_writes_of_one_callback_together_in_order():
    import asyncio

    from gateway_kernel.serving import COALESCE_BYTES, CoalescingTransport

    async def scenario() -> list[list[bytes]]:
        raw = _RecordingTransport()
        wrapped = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        seen = []
        wrapped.write(b"head ")
        wrapped.write(b"body")
        assert raw.writes == [] and wrapped.get_write_buffer_size() == 9
        await asyncio.sleep(0)  # the end of the callback: one write, in order
        seen.append(list(raw.writes))
        big = b"x" * (COALESCE_BYTES + 1)
        wrapped.write(b"small")
        wrapped.write(big)  # flushes what is held first, then goes straight through
        seen.append(list(raw.writes))
        wrapped.write(b"last")
        wrapped.close()  # close flushes first
        seen.append(list(raw.writes))
        assert raw.closed and wrapped.get_extra_info("peername") == ("127.0.0.1", 1)
        await asyncio.sleep(0)
        seen.append(list(raw.writes))  # the scheduled flush found nothing more
        return seen

    first, second, third, fourth = asyncio.run(scenario())
    big = b"x" * (COALESCE_BYTES + 1)
    assert first == [b"head body"]
    assert second == [b"head body", b"small", big]
    assert third == fourth == [b"head body", b"small", big, b"last"]
