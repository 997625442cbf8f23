"""The proxy's async upstream client (plugins/proxy/upstream.py) against real loopback engines:
errors, the four timeouts, the address guard, streaming both ways, pooling, pass-through."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import ipaddress
import time
import tracemalloc
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from gateway_kernel.netpolicy import AddressPolicy
from gateway_plugins.proxy.upstream import (
    Timeouts,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)
from tests.support.async_upstreams import SMALL, AsyncEngine
from tests.support.upstreams import GZIP_BODY, Upstream, pattern_sha256, refused_url

MIB = 1024 * 1024
T = Timeouts(connect_s=5, read_s=10, headers_s=10, max_duration_s=30)


@pytest.fixture
def engine():
    with AsyncEngine() as server:
        yield server


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run one test's coroutine, bounded (a hung client fails the test instead of the run)."""
    return asyncio.run(asyncio.wait_for(coro, 60))


async def body_of(response: UpstreamResponse) -> bytes:
    return b"".join([chunk async for chunk in response])


async def get(client: UpstreamClient, url: str, timeouts: Timeouts = T, guard: bool = False,
              headers: list[tuple[str, str]] | None = None) -> tuple[int, bytes]:
    response = await client.request("GET", url, headers or [], None, timeouts=timeouts,
                                    guard=guard)
    return response.status, await body_of(response)


def client(max_connections: int = 8, policy: AddressPolicy | None = None) -> UpstreamClient:
    return UpstreamClient(max_connections=max_connections, address_policy=policy)


# -- errors and timeouts ---------------------------------------------------------------------


def test_refused_connection_is_a_connect_error():
    async def go():
        c = client()
        with pytest.raises(UpstreamConnectError):
            await get(c, refused_url() + "/api/v1/small")
        await c.aclose()

    run(go())


def test_hanging_engine_times_out_at_the_headers_deadline(engine):
    async def go():
        c = client()
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="headers"):
            await get(c, engine.url + "/api/v1/hang",
                      Timeouts(connect_s=5, read_s=10, headers_s=0.5, max_duration_s=30))
        assert 0.4 < time.monotonic() - start < 3
        await c.aclose()

    run(go())


def test_drip_fed_body_stops_at_the_overall_deadline(engine):
    """One byte every 0.1 s never trips the 2 s read timeout; the 1 s overall cap ends it."""
    async def go():
        c = client()
        start = time.monotonic()
        response = await c.request("GET", engine.url + "/api/v1/drip?n=200&interval=0.1", [],
                                   None, timeouts=Timeouts(5, 2, 5, 1.0), guard=False)
        received = 0
        with pytest.raises(UpstreamTimeout, match="overall"):
            async for chunk in response:
                received += len(chunk)
        assert 0 < received < 200
        assert 0.9 < time.monotonic() - start < 3
        assert c._open == 0  # the connection was discarded, not pooled
        await c.aclose()

    run(go())


def test_drip_fed_headers_stop_at_the_headers_deadline(engine):
    async def go():
        c = client()
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="headers"):
            await get(c, engine.url + "/api/v1/drip-headers?interval=0.05",
                      Timeouts(connect_s=5, read_s=5, headers_s=0.8, max_duration_s=30))
        assert 0.7 < time.monotonic() - start < 3
        await c.aclose()

    run(go())


def test_silence_mid_body_is_a_read_timeout(engine):
    async def go():
        c = client()
        response = await c.request("GET", engine.url + "/api/v1/drip?n=3&interval=5", [],
                                   None, timeouts=Timeouts(5, 0.5, 5, 30), guard=False)
        with pytest.raises(UpstreamTimeout, match="read"):
            await body_of(response)
        await c.aclose()

    run(go())


def test_body_cut_off_mid_way_is_a_protocol_error(engine):
    async def go():
        c = client()
        response = await c.request("GET", engine.url + "/api/v1/truncated", [], None,
                                   timeouts=T, guard=False)
        received = b""
        with pytest.raises(UpstreamProtocolError):
            async for chunk in response:
                received += chunk
        assert received == b"t" * 10
        await c.aclose()

    run(go())


def test_header_with_a_line_break_is_refused_before_sending(engine):
    async def go():
        c = client()
        with pytest.raises(UpstreamProtocolError):
            await get(c, engine.url + "/api/v1/small",
                      headers=[("X-A", "1\r\nX-Injected: yes")])
        assert engine.requests == []
        await c.aclose()

    run(go())


# -- the address guard ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["169.254.169.254", "[fd00:ec2::254]", "168.63.129.16",
                                  "[64:ff9b::a9fe:a9fe]", "[::ffff:169.254.169.254]",
                                  "2852039166", "0.0.0.0"])  # noqa: S104
def test_guard_refuses_link_local_and_metadata(host):
    async def go():
        c = client(policy=AddressPolicy())
        start = time.monotonic()
        with pytest.raises(UpstreamConnectError, match="may not use"):
            await get(c, f"http://{host}/latest/meta-data/", guard=True)
        assert time.monotonic() - start < 2  # refused before any connection attempt
        await c.aclose()

    run(go())


def test_guard_refuses_the_gateways_own_address_also_by_name(engine):
    async def go():
        policy = AddressPolicy(own_addresses=[("127.0.0.1", engine.port)])
        c = client(policy=policy)
        for url in (f"http://127.0.0.1:{engine.port}", f"http://localhost:{engine.port}"):
            with pytest.raises(UpstreamConnectError, match="may not use"):
                await get(c, url + "/api/v1/small", guard=True)
        assert engine.requests == []
        # Static (operator-configured) URLs are not guarded.
        assert await get(c, f"http://127.0.0.1:{engine.port}/api/v1/small") == (200, SMALL)
        await c.aclose()

    run(go())


def test_guard_connects_to_the_checked_address_with_the_urls_host_header(engine):
    """A name is resolved once, checked, and that address connected to; Host stays the name."""
    async def go():
        seen: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []

        class Recording(AddressPolicy):
            def refusal(self, ip, port=None):
                seen.append(ip)
                return super().refusal(ip, port)

        c = client(policy=Recording())
        status, _ = await get(c, f"http://localhost:{engine.port}/api/v1/echo", guard=True)
        assert status == 200
        assert seen and all(ip.is_loopback for ip in seen)
        assert engine.requests[-1].header("host") == f"localhost:{engine.port}"
        await c.aclose()

    run(go())


# -- streaming, pooling, pass-through -------------------------------------------------------


async def zeros(total: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    block = bytes(chunk)
    for _ in range(total // chunk):
        yield block


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
def test_streamed_upload_of_50_mib_in_bounded_memory(engine, declared):
    size = 50 * MIB

    async def go():
        c = client()
        headers = [("Content-Length", str(size))] if declared else []
        gc.collect()
        tracemalloc.start()
        try:
            response = await c.request("POST", engine.url + "/api/v1/echo", headers,
                                       zeros(size), timeouts=T, guard=False)
            body = await body_of(response)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status == 200, body
        assert peak < 4 * MIB, peak
        seen = engine.requests[-1]
        assert seen.length == size
        assert seen.sha256 == hashlib.sha256(bytes(size)).hexdigest()
        assert seen.header("transfer-encoding") == (None if declared else "chunked")
        assert seen.header("content-length") == (str(size) if declared else None)
        await c.aclose()

    run(go())


def test_streamed_body_shorter_than_its_content_length_is_an_error(engine):
    async def go():
        c = client()
        with pytest.raises(UpstreamProtocolError, match="shorter"):
            await c.request("POST", engine.url + "/api/v1/echo", [("Content-Length", "100")],
                            zeros(64, 32), timeouts=T, guard=False)
        assert c._open == 0
        await c.aclose()

    run(go())


def test_download_arrives_in_pieces_and_whole(engine):
    size = 8 * MIB

    async def go():
        c = client()
        response = await c.request("GET", engine.url + f"/api/v1/download?size={size}", [],
                                   None, timeouts=T, guard=False)
        digest, pieces, largest = hashlib.sha256(), 0, 0
        async for chunk in response:
            digest.update(chunk)
            pieces += 1
            largest = max(largest, len(chunk))
        assert digest.hexdigest() == pattern_sha256(size)
        assert pieces > 8 and largest <= 2 * MIB  # streamed, not gathered
        await c.aclose()

    run(go())


def test_chunked_response_is_decoded_and_complete():
    size = 3 * MIB + 17

    async def go(url):
        c = client()
        response = await c.request("GET", url + f"/api/v1/chunked?size={size}", [], None,
                                   timeouts=T, guard=False)
        assert ("Transfer-Encoding", "chunked") in response.headers
        digest = hashlib.sha256()
        async for chunk in response:
            digest.update(chunk)
        assert digest.hexdigest() == pattern_sha256(size)
        await c.aclose()

    with Upstream() as threaded:
        run(go(threaded.url))


def test_keep_alive_connection_is_reused(engine):
    async def go():
        c = client()
        for _ in range(3):
            assert await get(c, engine.url + "/api/v1/small") == (200, SMALL)
        head = await c.request("HEAD", engine.url + "/api/v1/small", [], None, timeouts=T,
                               guard=False)
        assert head.status == 200 and await body_of(head) == b""
        assert await get(c, engine.url + "/api/v1/small") == (200, SMALL)
        assert engine.connections == 1
        assert len({r.peer_port for r in engine.requests}) == 1
        # Connection: close is honoured: the next request opens a new connection.
        assert await get(c, engine.url + "/api/v1/close") == (200, SMALL)
        assert await get(c, engine.url + "/api/v1/small") == (200, SMALL)
        assert engine.connections == 2
        await c.aclose()

    run(go())


def test_connections_are_bounded_and_waiters_get_them(engine):
    async def go():
        c = client(max_connections=2)
        results = await asyncio.gather(*(
            get(c, engine.url + "/api/v1/drip?n=3&interval=0.05") for _ in range(6)))
        assert results == [(200, b"ddd")] * 6
        assert engine.connections == 2
        await c.aclose()

    run(go())


def test_waiting_for_a_connection_is_bounded_by_the_connect_timeout(engine):
    async def hang_once():
        # The only connection is held by a request the engine never answers.
        c = client(max_connections=1)
        task = asyncio.ensure_future(get(c, engine.url + "/api/v1/hang"))
        await asyncio.sleep(0.3)
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="pool"):
            await get(c, engine.url + "/api/v1/small", Timeouts(0.5, 5, 5, 5))
        assert time.monotonic() - start < 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert c._open == 0  # the cancelled exchange gave its connection back (closed)
        assert await get(c, engine.url + "/api/v1/small") == (200, SMALL)
        await c.aclose()

    run(hang_once())


def test_gzip_body_passes_through_unmodified(engine):
    async def go():
        c = client()
        response = await c.request("GET", engine.url + "/api/v1/gzip", [], None, timeouts=T,
                                   guard=False)
        assert ("Content-Encoding", "gzip") in response.headers
        assert await body_of(response) == GZIP_BODY
        # Nothing asks for compression on the caller's behalf.
        assert engine.requests[-1].header("accept-encoding") is None
        await c.aclose()

    run(go())


def test_redirects_are_returned_not_followed(engine):
    async def go():
        c = client()
        response = await c.request("GET", engine.url + "/api/v1/redirect", [], None,
                                   timeouts=T, guard=False)
        assert response.status == 302
        assert ("Location", "/api/v1/small") in response.headers
        await response.aclose()
        assert len(engine.requests) == 1
        await c.aclose()

    run(go())


def test_headers_are_sent_as_given_and_received_as_sent(engine):
    async def go():
        c = client()
        response = await c.request(
            "PUT", engine.url + "/api/v1/echo?a=1&b=%2F", [("X-Mixed-Case", "v"), ("X-Dup", "1"),
                                                            ("X-Dup", "2")],
            b"payload", timeouts=T, guard=False)
        await body_of(response)
        seen = engine.requests[-1]
        assert (seen.method, seen.target) == ("PUT", "/api/v1/echo?a=1&b=%2F")
        assert [v for n, v in seen.headers if n == "x-dup"] == ["1", "2"]
        assert seen.header("host") == f"127.0.0.1:{engine.port}"
        assert (seen.length, seen.header("content-length")) == (7, "7")
        assert ("Content-Type", "application/json") in response.headers  # names as sent
        await c.aclose()

    run(go())


def test_aclose_mid_body_discards_the_connection(engine):
    async def go():
        c = client()
        response = await c.request("GET", engine.url + "/api/v1/endless", [], None,
                                   timeouts=T, guard=False)
        iterator = response.__aiter__()
        assert len(await iterator.__anext__()) > 0
        await response.aclose()
        assert c._open == 0 and not any(c._idle.values())
        for _ in range(100):  # the engine sees its reader go away
            if engine.disconnected.is_set():
                break
            await asyncio.sleep(0.05)
        assert engine.disconnected.is_set()
        assert await get(c, engine.url + "/api/v1/small") == (200, SMALL)
        assert engine.connections == 2
        await c.aclose()

    run(go())


def test_slow_reader_pauses_the_engine_instead_of_buffering(engine):
    """Not reading the body must not pull the engine's endless answer into memory."""
    async def go():
        c = client()
        response = await c.request("GET", engine.url + "/api/v1/endless", [], None,
                                   timeouts=T, guard=False)
        await asyncio.sleep(0.5)  # the engine keeps writing; we read nothing
        assert response._conn.buffered <= 2 * MIB
        await response.aclose()
        await c.aclose()

    run(go())


def test_early_answer_during_an_upload_is_returned(engine):
    """An engine that refuses a body before reading it (413) gets its answer through."""
    async def go():
        c = client()
        response = await c.request("POST", engine.url + "/api/v1/early", [],
                                   zeros(20 * MIB), timeouts=T, guard=False)
        assert response.status == 413
        assert await body_of(response) == b'{"error":"too large"}'
        assert c._open == 0  # half-sent: never reused
        assert await get(c, engine.url + "/api/v1/small") == (200, SMALL)
        await c.aclose()

    run(go())


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def tls_engine(tmp_path):
    """A TLS engine on 127.0.0.1 whose certificate names only ``localhost``, and a client
    context trusting it."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    with AsyncEngine(ssl_context=server_context) as server:
        yield server, client_context


def test_tls_is_verified_against_the_urls_host_name_through_the_guard(tls_engine):
    engine, context = tls_engine

    async def go():
        c = UpstreamClient(max_connections=4, address_policy=AddressPolicy(),
                           ssl_context=context)
        # Resolved and checked, connected to 127.0.0.1, SNI and verification on "localhost".
        assert await get(c, f"https://localhost:{engine.port}/api/v1/small",
                         guard=True) == (200, SMALL)
        # The same server by address: the certificate does not name it, so no connection.
        with pytest.raises(UpstreamConnectError):
            await get(c, f"https://127.0.0.1:{engine.port}/api/v1/small", guard=True)
        await c.aclose()

    run(go())


def test_a_second_unasked_answer_spoils_the_connection_not_the_first(engine):
    async def go():
        c = client()
        response = await c.request("GET", engine.url + "/api/v1/double", [], None,
                                   timeouts=T, guard=False)
        assert await body_of(response) == b"ok"
        assert [v for n, v in response.headers if n == "X-N"] == ["1"]
        assert c._open == 0  # not pooled: its framing cannot be trusted
        assert await get(c, engine.url + "/api/v1/small") == (200, SMALL)
        assert engine.connections == 2
        await c.aclose()

    run(go())


def test_guard_refuses_a_name_if_any_of_its_addresses_is_refused(engine, monkeypatch):
    """A name answering with a fine and a refused address (DNS games) is refused outright;
    a name that does not resolve is a connect error."""
    import socket

    async def fake_getaddrinfo(self, host, port, **kwargs):
        if host == "mixed.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", fake_getaddrinfo)

    async def go():
        c = client(policy=AddressPolicy())
        with pytest.raises(UpstreamConnectError, match="may not use"):
            await get(c, f"http://mixed.test:{engine.port}/api/v1/small", guard=True)
        with pytest.raises(UpstreamConnectError, match="cannot resolve"):
            await get(c, f"http://nowhere.test:{engine.port}/api/v1/small", guard=True)
        assert engine.requests == []
        await c.aclose()

    run(go())
