"""Hostile clients against a real ``flowork-gateway serve`` (waitress, threads=2) over sockets.

- request targets with dot segments, encoded dots and slashes, backslashes, NULs (hypothesis,
  raw bytes on the wire, nothing normalised by a client library): the loopback stub engine
  only ever receives paths that stay inside /api/v1 once decoded;
- slow clients (half-sent headers, half-sent bodies, clients that never read) do not pin the
  two worker threads: other requests are served meanwhile;
- oversized headers are refused by waitress; a deeply nested JSON body is a 400, not a 500,
  and the server keeps serving.
"""

from __future__ import annotations

import os
import posixpath
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_plugins.auth_crypto.signing import Signer
from tests.support.procs import GatewayProcess
from tests.support.stub_engine import StubEngine

EXAMPLES = int(os.environ.get("FLOWORK_HOSTILE_EXAMPLES", "300")) // 2
API = "/api/v1"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> Response:
    """Send ``data`` as is, read until the server closes, parse status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(status, headers, body)


def request_bytes(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Served:
    gateway: GatewayProcess
    stub: StubEngine
    owner: Signer
    owner_headers: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("hostile-server")
    with StubEngine() as stub, GatewayProcess.start({
        "DATABASE_URL": f"sqlite:///{(tmp / 'gateway.db').as_posix()}",
        "FLOWORK_ENGINE_NETWORKS": "127.0.0.0/8",
        "FLOWORK_PROXY_CONNECT_TIMEOUT_S": "1",
    }, log_dir=tmp, threads=2) as gateway:
        owner = Signer.new()
        headers = owner.headers(timestamp=int(time.time()) + 10)
        r = httpx.post(gateway.url("/user/engines"), json={"name": "stub"}, headers=headers)
        assert r.status_code == 201, r.text
        r = httpx.post(gateway.url("/engine/heartbeat"), json={"url": stub.url},
                       headers={"X-Engine-Token": r.json()["raw_token"]})
        assert r.status_code == 200, r.text
        yield Served(gateway, stub, owner, headers)
        assert "Traceback" not in gateway.log_text(), gateway.log_tail()


def inside_api(recorded_target: str) -> bool:
    """Does the path an engine received stay under /api/v1 once decoded and normalised?"""
    path = recorded_target.split("?", 1)[0]
    decoded = unquote(path).replace("\\", "/")
    normal = posixpath.normpath(decoded)
    return "\x00" not in decoded and (normal == API or normal.startswith(API + "/"))


TARGET_PIECES = ("..", ".", "%2e", "%2E", "%2e%2e", "%2f", "%2F", "%5c", "%5C", "\\", "%252e",
                 "%252f", "%25", "%00", ";", "%3b", "/", "//", "a", "b", "etc", "passwd",
                 "%c0%ae", "%u002e", "?", "?x=../..", "&", "=", "%ff")


@pytest.mark.no_openapi_check
def test_proxied_paths_cannot_leave_api_v1_on_the_engine(served):
    fixed = [
        "/api/v1/../../etc/passwd", "/api/v1/%2e%2e/%2e%2e/etc/passwd", "/api/v1/..%2f..%2fadmin",
        "/api/v1/a/..%5c..%5cadmin", "/api/v1/%252e%252e/x", "/api/v1/.%2e/x",
        "/api/v1//..//..//x", "/api/v1/%2e%2e%2f%2e%2e%2fx", "/api/v1/x/%00/../y",
        "http://127.0.0.1:1/api/v1/../../x", "/api/v1/a;/../../x", "/api/v1/a/b/../../../x",
    ]
    statuses: list[int] = []

    def send(target: str) -> None:
        r = raw_request(served.gateway.port, request_bytes("GET", target, served.owner_headers))
        statuses.append(r.status)
        assert r.status != 500, (target, r.body[:200])
        assert b"Traceback" not in r.body

    for target in fixed:
        send(target)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(TARGET_PIECES), min_size=1, max_size=8))
    def run(pieces: list[str]) -> None:
        send(API + "/" + "".join(p if p in ("/", "//") else p + "/" for p in pieces).rstrip("/"))

    run()
    received = served.stub.paths()
    assert received, "no request reached the stub engine: the test proved nothing"
    escaped = [p for p in received if not inside_api(p)]
    assert not escaped, f"paths outside {API} reached the engine: {escaped[:5]}"
    assert 404 in statuses  # dot segments are refused by the gateway itself


def test_slow_clients_do_not_pin_the_worker_threads(served):
    """threads=2; five stalled sockets (half headers, half bodies, never-reading) are open
    while ordinary requests are served."""
    port = served.gateway.port
    stalled: list[socket.socket] = []
    try:
        for partial in (
            b"GET /api/v1/system/health HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            b"GET /api/v1/auth/profile HTTP/1.1\r\nHost: x\r\n",
            b"POST /api/v1/user/engines HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"na",
        ):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(partial)
            stalled.append(sock)
        for _ in range(2):  # full requests for a big answer, never read
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            stalled.append(sock)
        with httpx.Client(timeout=5) as client:
            for _ in range(10):
                assert client.get(served.gateway.url("/system/health")).status_code == 200
            r = client.get(served.gateway.url("/auth/profile"), headers=served.owner_headers)
            assert r.status_code == 200
            r = client.get(served.gateway.url("/user/engines"), headers=served.owner_headers)
            assert r.status_code == 200 and len(r.json()) == 1
    finally:
        for sock in stalled:
            sock.close()


def test_oversized_request_headers_are_refused_and_the_server_keeps_serving(served):
    """Waitress refuses headers over its 256 KiB limit with 431 (or resets the connection
    when the client is still sending): either way nothing reaches the application."""
    for headers in ({"X-Filler": "a" * 300_000}, {f"X-H{i}": "b" * 100 for i in range(3000)}):
        try:
            r = raw_request(served.gateway.port, request_bytes("GET", API + "/auth/profile",
                                                               {**served.owner_headers, **headers}))
        except ConnectionResetError:
            continue
        assert r.status == 431, (r.status, r.body[:200])
    assert httpx.get(served.gateway.url("/system/health")).status_code == 200


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_json_is_a_400_not_a_500(served, opener):
    body = (opener * 200_000).encode()
    headers = {**served.owner_headers, "Content-Type": "application/json"}
    r = raw_request(served.gateway.port, request_bytes("POST", API + "/user/engines", headers, body))
    assert r.status == 400, (r.status, r.body[:200])
    assert r.headers["content-type"].startswith("application/json")
    assert httpx.get(served.gateway.url("/system/health")).status_code == 200


def test_forwarded_for_cannot_be_spoofed_by_a_client(served):
    """No trusted proxy configured: a client's X-Forwarded-* never reach the engine."""
    headers = {**served.owner_headers, "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil",
               "Forwarded": "for=6.6.6.6"}
    r = httpx.get(served.gateway.url("/spoof-check"), headers=headers)
    assert r.status_code == 200
    seen = served.stub.requests[-1].headers
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-host"] != "evil" and "forwarded" not in seen


def test_client_address_chain_from_a_trusted_load_balancer_reaches_the_engine(tmp_path):
    """Behind a load balancer listed in FLOWORK_TRUSTED_PROXIES, the engine sees the real
    client address first in X-Forwarded-For, under the real server (not just in-process)."""
    with StubEngine() as stub, GatewayProcess.start({
        "DATABASE_URL": f"sqlite:///{(tmp_path / 'lb.db').as_posix()}",
        "FLOWORK_ENGINE_NETWORKS": "127.0.0.0/8",
        "FLOWORK_TRUSTED_PROXIES": "127.0.0.0/8",
    }, log_dir=tmp_path, threads=2) as gateway:
        owner = Signer.new()
        r = httpx.post(gateway.url("/user/engines"), json={"name": "lb"}, headers=owner.headers())
        httpx.post(gateway.url("/engine/heartbeat"), json={"url": stub.url},
                   headers={"X-Engine-Token": r.json()["raw_token"]}).raise_for_status()
        r = httpx.get(gateway.url("/behind-lb"), headers={
            **owner.headers(), "X-Forwarded-For": "198.51.100.7",
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "flowork.example"})
        assert r.status_code == 200, r.text
        seen = stub.requests[-1].headers
        assert seen["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "https"
        assert seen["x-forwarded-host"] == "flowork.example"


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("FLOWORK_TEST_POSTGRES_URL")),
                    reason="database-independent and long: runs in the SQLite pass only")
def test_clients_that_never_read_a_large_download_do_not_pin_the_threads_forever(tmp_path):
    """threads=2; two clients ask for a large proxied download and never read it. Once
    waitress has buffered its high-water mark (16 MiB) the worker threads wait for them; the
    stalled connections must be dropped within channel_timeout (plus waitress's cleanup
    interval), after which other requests are served again. (Waitress's own channel_timeout
    skips connections with a request in progress, so without help they are pinned forever.)"""
    from waitress.adjustments import Adjustments

    from gateway_kernel.cli import CHANNEL_TIMEOUT_S

    bound = CHANNEL_TIMEOUT_S + Adjustments.cleanup_interval + 15
    with StubEngine() as stub, GatewayProcess.start({
        "DATABASE_URL": f"sqlite:///{(tmp_path / 'pin.db').as_posix()}",
        "FLOWORK_ENGINE_NETWORKS": "127.0.0.0/8",
    }, log_dir=tmp_path, threads=2) as gateway:
        owner = Signer.new()
        headers = owner.headers(timestamp=int(time.time()) + 10)
        r = httpx.post(gateway.url("/user/engines"), json={"name": "big"}, headers=headers)
        httpx.post(gateway.url("/engine/heartbeat"), json={"url": stub.url},
                   headers={"X-Engine-Token": r.json()["raw_token"]}).raise_for_status()
        stalled = []
        try:
            for _ in range(2):
                sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(request_bytes("GET", f"{API}/files/big/{256 * 1024 * 1024}", headers))
                stalled.append(sock)
            pinned_at = None  # first moment a health check went unanswered
            deadline = time.monotonic() + 30
            while pinned_at is None and time.monotonic() < deadline:
                try:
                    httpx.get(gateway.url("/system/health"), timeout=3)
                    time.sleep(0.5)
                except httpx.TimeoutException:
                    pinned_at = time.monotonic()
            if pinned_at is None:
                return  # the threads were never pinned: nothing left to prove
            while True:
                try:
                    if httpx.get(gateway.url("/system/health"), timeout=3).status_code == 200:
                        break
                except httpx.TimeoutException:
                    pass
                waited = time.monotonic() - pinned_at
                assert waited < bound, f"worker threads still pinned after {waited:.0f} s"
        finally:
            for sock in stalled:
                sock.close()
