"""A database host that accepts connections and then never answers (a hung server, a
half-open network path) must cost a bounded wait and a 503, not a worker thread forever.

The "server" here is a loopback socket that listens and never accepts, so the TCP handshake
completes (in the backlog) and the PostgreSQL start-up message gets no reply.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import falcon.testing
import pytest

from gateway_kernel import create_gateway
from gateway_kernel.db import open_database
from gateway_plugins.auth_crypto.signing import Signer

pytest.importorskip("psycopg2")


@pytest.fixture
def silent_server() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def call_with_deadline(fn, seconds: float):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it takes too long."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s: the request hangs"
    return result[0]


def test_postgres_connections_have_a_connect_timeout_by_default():
    db = open_database("postgresql://u@127.0.0.1:1/x")
    assert db.connect_params.get("connect_timeout") == 5
    db = open_database("postgresql://u@127.0.0.1:1/x?connect_timeout=2")
    assert str(db.connect_params.get("connect_timeout")) == "2"


@pytest.mark.no_openapi_check
def test_a_silent_database_host_is_a_prompt_503(silent_server):
    gateway = create_gateway(environ={}, settings={
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{silent_server}/x?connect_timeout=1",
        "FLOWORK_DB_POOL_SIZE": "2",
    })
    try:
        gateway.start()
        client = falcon.testing.TestClient(gateway)
        started = time.monotonic()
        r = call_with_deadline(lambda: client.simulate_get("/api/v1/system/health"), 15)
        assert r.status_code == 503
        assert r.json == {"status": "unhealthy", "database": "disconnected"}
        headers = Signer.new().headers()
        for _ in range(3):  # more than the pool: failed connects are not counted as in use
            r = call_with_deadline(
                lambda: client.simulate_get("/api/v1/auth/profile", headers=headers), 15)
            assert r.status_code == 503 and r.json["code"] == "database_unavailable"
        assert time.monotonic() - started < 30
    finally:
        gateway.close()
