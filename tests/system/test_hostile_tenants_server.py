"""Issue 14 findings 4-7 against a real ``flowork-gateway serve`` (waitress) over sockets.

The in-process tests (test_hostile_tenants.py, test_auth_crypto.py) cover each rule in
detail; these replay the attacks as the issue made them, through a real server, so that what
the server itself does to a request (decoding the target, the client address) is part of it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway_plugins.auth_crypto.signing import Signer
from tests.support.procs import GatewayProcess
from tests.support.stub_engine import StubEngine
from tests.system.test_hostile_server import raw_request, request_bytes

FAIL_LIMIT = 60


@dataclass
class Served:
    gateway: GatewayProcess
    stub: StubEngine
    owner: Signer
    headers: dict[str, str]
    engine_id: str
    token: str


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("hostile-tenants")
    with StubEngine() as stub, GatewayProcess.start({
        "DATABASE_URL": f"sqlite:///{(tmp / 'gateway.db').as_posix()}",
        "FLOWORK_ENGINE_NETWORKS": "127.0.0.0/8",
        "FLOWORK_LIMIT_ENGINES_PER_USER": "2",
        "FLOWORK_LIMIT_LINKS_PER_WORKFLOW": "2",
        "FLOWORK_AUTH_FAIL_LIMIT": str(FAIL_LIMIT),
        "FLOWORK_AUTH_FAIL_WINDOW_S": "600",
    }, log_dir=tmp, threads=4) as gateway:
        owner = Signer.new()
        headers = owner.headers()
        r = httpx.post(gateway.url("/user/engines"), json={"name": "stub"}, headers=headers)
        assert r.status_code == 201, r.text
        engine = r.json()
        r = httpx.post(gateway.url("/engine/heartbeat"), json={"url": stub.url},
                       headers={"X-Engine-Token": engine["raw_token"]})
        assert r.status_code == 200, r.text
        yield Served(gateway, stub, owner, headers, engine["id"], engine["raw_token"])
        assert "Traceback" not in gateway.log_text(), gateway.log_tail()


def test_future_dated_message_is_refused_after_logout(served):
    user = Signer.new()
    ahead = user.headers(timestamp=int(time.time()) + 10)
    assert httpx.get(served.gateway.url("/auth/profile"), headers=ahead).status_code == 200
    assert httpx.post(served.gateway.url("/auth/logout"), headers=ahead).status_code == 200
    r = httpx.get(served.gateway.url("/auth/profile"), headers=ahead)
    assert r.status_code == 401 and r.json()["code"] == "revoked", r.text
    # cut-off = the message's date + 15 s skew: 25 s from when it was signed.
    assert 20 <= int(r.headers["Retry-After"]) <= 26


def test_per_user_limit_through_the_server(served):
    user = Signer.new()
    headers = user.headers()
    statuses = [httpx.post(served.gateway.url("/user/engines"), json={"name": f"e{i}"},
                           headers=headers).status_code for i in range(4)]
    assert statuses == [201, 201, 409, 409]
    links = [httpx.post(served.gateway.url("/workflows/flow/shares"), json={},
                        headers=headers) for _ in range(3)]
    assert [r.status_code for r in links] == [201, 201, 409]
    assert links[-1].json()["code"] == "limit_reached"


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-23:00", "0001-01-01T00:00:00+05:00"])
def test_overflowing_expiry_is_400(served, expires_at):
    user = Signer.new()
    r = httpx.post(served.gateway.url("/workflows/flow/shares"), json={"expires_at": expires_at},
                   headers=user.headers())
    assert r.status_code == 400 and r.json()["code"] == "invalid_body", r.text


def test_concurrent_token_resets_leave_one_working_token(served):
    user = Signer.new()
    headers = user.headers()
    engine = httpx.post(served.gateway.url("/user/engines"), json={"name": "r"},
                        headers=headers).json()
    url = served.gateway.url(f"/user/engines/{engine['id']}/reset-token")
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: httpx.post(url, headers=headers, timeout=30),
                                range(20)))
    assert [r.status_code for r in results] == [200] * 20
    tokens = {r.json()["token"] for r in results}
    assert len(tokens) == 20
    working = [t for t in tokens
               if httpx.get(served.gateway.url("/engine/get-engine-auth-info"),
                            headers={"X-Engine-Token": t}).status_code == 200]
    assert len(working) == 1


@pytest.mark.no_openapi_check
@pytest.mark.parametrize("target", [
    "/api/v1/auth/profile/", "/api/v1/workflows/a%2Fb/shares", "/api/v1/workflows/a%2fb/shares/",
    "/api/v1/user/state/x%2Fy", "/api/v1/engines/a%2Fb/shares",
])
def test_owned_paths_in_another_spelling_are_not_proxied(served, target):
    before = len(served.stub.requests)
    for method in ("GET", "POST"):
        r = raw_request(served.gateway.port, request_bytes(method, target, served.headers))
        assert r.status in (404, 405), (method, target, r.status, r.body[:200])
        assert b'"code"' in r.body
    assert len(served.stub.requests) == before


def test_non_canonical_engine_id_header_is_404(served):
    for spelled in (served.engine_id.upper(), uuid.UUID(served.engine_id).hex,
                    f"urn:uuid:{served.engine_id}", "{" + served.engine_id + "}"):
        r = httpx.get(served.gateway.url("/anything"),
                      headers={**served.headers, "X-Flowork-Engine-ID": spelled})
        assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    r = httpx.get(served.gateway.url("/anything"),
                  headers={**served.headers, "X-Flowork-Engine-ID": served.engine_id})
    assert r.status_code == 200


def test_token_guessing_is_logged_and_throttled(served):
    """Last in this module: it leaves 127.0.0.1 throttled on this server."""
    from gateway_plugins.engines.tokens import new_engine_token

    guesses: list[str] = []
    statuses: list[int] = []
    with httpx.Client(timeout=10) as http:
        for _ in range(FAIL_LIMIT + 1):  # earlier tests of the module failed a few times too
            guess = new_engine_token()
            guesses.append(guess)
            r = http.post(served.gateway.url("/engine/heartbeat"), json={},
                          headers={"X-Engine-Token": guess})
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
        assert r.json()["code"] == "too_many_requests"
        assert 1 <= int(r.headers["Retry-After"]) <= 600
        # The right token from this address is refused too; health still answers.
        r = http.post(served.gateway.url("/engine/heartbeat"), json={},
                      headers={"X-Engine-Token": served.token})
        assert r.status_code == 429
        assert http.get(served.gateway.url("/system/health")).status_code == 200
    log = served.gateway.log_text()
    assert "authentication failed: scheme=engine_token code=invalid_engine_token " \
           "client=127.0.0.1 path='/api/v1/engine/heartbeat'" in log
    assert not [g for g in guesses if g in log]
