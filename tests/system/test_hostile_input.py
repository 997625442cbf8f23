"""Hostile input against the in-process gateway: every route, generated headers, paths, bodies.

Whatever a client sends, the gateway answers without a 500, without a traceback, with the
JSON envelope ``{"error", "code"}`` on every error it produces itself, with an
``X-Request-ID``, and without logging an unhandled exception. Routes are enumerated from
``gateway.routes`` (plus the proxy's catch-all), so a new route is fuzzed without editing this
file. Oversized bodies and auth headers are refused with 413 / 401.

The public engine and every user engine are a loopback stub, and engine URLs are limited to
127.0.0.0/8, so nothing generated here can make the gateway connect off the machine.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import falcon
import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_kernel.app import API_PREFIX
from gateway_kernel.testing import SERVICE_SECRET
from gateway_plugins.auth_crypto.signing import Signer
from tests.support.stub_engine import StubEngine

EXAMPLES = int(os.environ.get("FLOWORK_HOSTILE_EXAMPLES", "300"))
MAX_BODY = 64 * 1024  # FLOWORK_MAX_BODY_BYTES for this suite: small, so 413 is cheap to reach
MAX_UPLOAD = 256 * 1024  # FLOWORK_PROXY_MAX_UPLOAD_BYTES
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: 5xx answers the gateway gives on purpose (never a 500).
EXPECTED_5XX = {"not_implemented", "engine_offline", "no_public_engine", "engine_unavailable",
                "engine_unreachable", "engine_timeout", "service_auth_not_configured"}
HEADER_NAMES = ("X-User-Address", "X-Signature", "X-Signed-Message", "X-Payload-Version",
                "X-Engine-Token", "X-API-Key", "X-Flowork-Engine-ID", "X-Request-ID",
                "Content-Type", "Origin", "Accept", "Accept-Encoding", "Cookie", "Forwarded",
                "X-Forwarded-For", "X-Forwarded-Host", "Connection", "Transfer-Encoding-X",
                "Access-Control-Request-Method", "Range", "If-None-Match", "Authorization")
HOSTILE_SEGMENTS = (
    "..", ".", "%2e%2e", "%2E%2E", "%2e", "%2f", "%2F", "..%2f..%2f..%2fetc%2fpasswd",
    "%252e%252e", "%252f", "%00", "%ff%fe", "%", "%zz", "%3b", ";x=1", "%5c..%5c", "a" * 3000,
    "%27%20OR%20%271%27%3D%271", "%3Cscript%3E", "%E2%88%95", "%E2%80%AE", "null", "-1",
    "0", "99999999999999999999", "00000000-0000-0000-0000-000000000000", "%20", "~", "*",
    "0x" + "f" * 40, "%F0%9F%98%80", "%C0%AE%C0%AE", "con", "..%00",
)
BODY_KEYS = ("name", "share_with_identifier", "user_id", "role", "permission_level",
             "link_name", "expires_at", "request_id", "engine_id", "url", "vitals", "reason")
HOSTILE_JSON_TEXT = ("1e999999", "-1e999999", "NaN", "Infinity", '"\\ud800"', '{"a":1,"a":2}',
                     "\ufeff{}", "{\"name\": \"\\u0000\"}", "[]", "null", "true", "0",
                     '{"name": ' + '"' + "x" * 5000 + '"}', "{" * 50, '{"name": "a"', "\"",
                     '{"url": "http://169.254.169.254/"}', '{"url": "file:///etc/passwd"}',
                     '{"expires_at": "9999-99-99T99:99:99Z"}', '{"role": {"$ne": 1}}',
                     '{"expires_at": "9999-12-31T23:59:59-23:00"}',
                     '{"expires_at": "0001-01-01T00:00:00+05:00"}')


@dataclass
class World:
    """A gateway with some state to aim at: an owner, an engine online at the stub, a guest
    share, a workflow link, and the credentials of every principal kind."""

    client: falcon.testing.TestClient
    gateway: object
    owner: Signer
    owner_headers: dict[str, str]
    guest: Signer
    engine_id: str
    engine_token: str
    share_id: str
    share_token: str
    stub: StubEngine

    def owner_auth(self) -> dict[str, str]:
        """The owner's headers, signed now. A generated request may have logged the owner
        out, which refuses every message dated up to the allowed skew ahead; the owner comes
        back as after waiting the cut-off out (its revocation dropped), so that the next
        generated requests are still made as the signed-in owner."""
        from gateway_plugins.auth_crypto.models import Revocation

        with self.gateway.using_db(), self.gateway.db.connection_context():
            Revocation.delete().execute()
        self.gateway.plugins["auth_crypto"].scheme.accounts.clear()
        return self.owner.headers()

    def param(self, name: str) -> str:
        return {
            "engine_id": self.engine_id,
            "shared_user_id": self.guest.address,
            "share_id": self.share_id,
            "share_token": self.share_token,
            "preset_name": "my-flow",
            "key": "favorite_presets",
            "component_id": "comp_x",
            "lang_code": "en",
            "type": "modules",
            "id": "x",
        }.get(name, "x")


@pytest.fixture
def world(make_gateway) -> Iterator[World]:
    with StubEngine() as stub:
        gateway = make_gateway(settings={
            "FLOWORK_PUBLIC_ENGINE_URL": stub.url,
            "FLOWORK_ENGINE_NETWORKS": "127.0.0.0/8",
            "FLOWORK_MAX_BODY_BYTES": str(MAX_BODY),
            "FLOWORK_PROXY_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
            "FLOWORK_PROXY_CONNECT_TIMEOUT_S": "1",
            "FLOWORK_PROXY_READ_TIMEOUT_S": "5",
            # Generated garbage credentials are failures by the hundred: the throttle has
            # its own tests (test_hostile_auth.py); here it would turn everything into 429.
            "FLOWORK_AUTH_FAIL_LIMIT": "0",
        })
        client = falcon.testing.TestClient(gateway)
        owner, guest = Signer.new(), Signer.new()
        owner_headers = owner.headers()
        r = client.simulate_post(API_PREFIX + "/user/engines", json={"name": "target"},
                                 headers=owner_headers)
        assert r.status_code == 201, r.text
        engine_id, token = r.json["id"], r.json["raw_token"]
        r = client.simulate_post(API_PREFIX + "/engine/heartbeat", json={"url": stub.url},
                                 headers={"X-Engine-Token": token})
        assert r.status_code == 200, r.text
        r = client.simulate_post(f"{API_PREFIX}/engines/{engine_id}/shares",
                                 json={"share_with_identifier": guest.address},
                                 headers=owner_headers)
        assert r.status_code == 201, r.text
        r = client.simulate_post(API_PREFIX + "/workflows/my-flow/shares", json={},
                                 headers=owner_headers)
        assert r.status_code == 201, r.text
        yield World(client, gateway, owner, owner_headers, guest, engine_id, token,
                    r.json["share_id"], r.json["share_token"], stub)


def route_table(gateway) -> list[tuple[str, tuple[str, ...]]]:
    """(path template, served methods) of every route, from the gateway itself."""
    table = []
    for _plugin, route in gateway.routes:
        served = tuple(m for m in METHODS if hasattr(route.resource, f"on_{m.lower()}"))
        table.append((route.path, served))
    return table


class _UnhandledErrors(logging.Handler):
    """Collects records of unhandled exceptions the kernel logs (they would be 500s)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def unhandled() -> Iterator[_UnhandledErrors]:
    handler = _UnhandledErrors()
    logger = logging.getLogger("gateway_kernel")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def check_answer(method: str, path: str, result: falcon.testing.Result) -> None:
    """What every answer must satisfy, whatever was sent."""
    where = f"{method} {path[:200]} -> {result.status_code}"
    assert result.status_code != 500, f"{where}: {result.text[:300]}"
    assert result.headers.get("x-request-id"), f"{where}: no X-Request-ID"
    body = result.content or b""
    assert b"Traceback" not in body and b'File "' not in body, f"{where}: traceback leaked"
    if result.status_code < 400 or method == "HEAD":
        return
    assert (result.headers.get("content-type") or "").startswith("application/json"), where
    envelope = json.loads(body)
    assert isinstance(envelope, dict) and set(envelope) == {"error", "code"}, f"{where}: {body[:200]!r}"
    assert isinstance(envelope["error"], str) and isinstance(envelope["code"], str), where
    assert re.fullmatch(r"[a-z_]+", envelope["code"]), where
    if result.status_code >= 500:
        assert envelope["code"] in EXPECTED_5XX, f"{where}: {envelope}"
    if result.status_code == 405:
        assert result.headers.get("allow"), f"{where}: 405 without Allow"


# -- strategies -------------------------------------------------------------------------------

latin1_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=200)
segment = st.one_of(
    st.sampled_from(HOSTILE_SEGMENTS),
    st.text(max_size=40).map(lambda s: quote(s, safe="")),
    st.text(string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=20),
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=100))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)


@st.composite
def bodies(draw) -> tuple[bytes | None, str | None]:
    """(body, content type) in many shapes, valid-looking and not."""
    kind = draw(st.sampled_from(["none", "shaped", "json", "binary", "text", "deep", "large"]))
    content_type = draw(st.one_of(
        st.just("application/json"), st.none(),
        st.sampled_from(["text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                         "", "*/*"]),
        latin1_text,
    ))
    if kind == "none":
        return None, content_type
    if kind == "shaped":
        keys = draw(st.lists(st.sampled_from(BODY_KEYS), max_size=4, unique=True))
        obj = {k: draw(st.one_of(json_value, st.sampled_from(
            ["", " ", "x" * 101, "\x00", "runner", "view", "2099-01-01T00:00:00Z",
             "http://127.0.0.1:1", "http://[::1]:1/", "0x" + "a" * 40, "ftp://x"])))
               for k in keys}
        return json.dumps(obj).encode(), content_type
    if kind == "json":
        return json.dumps(draw(json_value)).encode(), content_type
    if kind == "binary":
        return draw(st.binary(max_size=500)), content_type
    if kind == "text":
        return draw(st.sampled_from(HOSTILE_JSON_TEXT)).encode(), content_type
    if kind == "deep":  # around and past the kernel's nesting limit
        depth = draw(st.integers(100, 5000))
        return (draw(st.sampled_from(["[", '{"a":'])) * depth).encode(), content_type
    return b"[" + b"1," * (MAX_BODY // 2) + b"1]", content_type  # just over the limit


@st.composite
def header_sets(draw, world: World) -> dict[str, str]:
    auth = draw(st.sampled_from(["none", "owner", "guest", "engine", "service", "garbage",
                                 "mutated", "siwe"]))
    headers: dict[str, str] = {}
    if auth == "owner":
        headers.update(world.owner_auth())
    elif auth == "guest":
        headers.update(world.guest.headers())
    elif auth == "engine":
        headers["X-Engine-Token"] = draw(st.sampled_from(
            [world.engine_token, world.engine_token[:-1] + "0", "dev_engine_", "x" * 500]))
    elif auth == "service":
        headers["X-API-Key"] = draw(st.sampled_from([SERVICE_SECRET, SERVICE_SECRET + "x", ""]))
    elif auth == "mutated":
        headers.update(world.owner_auth())
        name = draw(st.sampled_from(["X-User-Address", "X-Signature", "X-Signed-Message"]))
        headers[name] = draw(st.one_of(latin1_text, st.sampled_from([
            headers[name].upper(), headers[name] + "0", headers[name][:-2], "b64:" + "A" * 300,
            "flowork_api_auth|" + world.owner.address + "|99999999999999999999",
            "flowork_api_auth|" + world.owner.address + "|-1", "0x" + "0" * 130,
        ])))
    elif auth == "siwe":
        headers.update(world.owner.siwe_headers(domain=draw(st.sampled_from(
            ["localhost", "evil.example"]))))
    elif auth == "garbage":
        for name in ("X-User-Address", "X-Signature", "X-Signed-Message"):
            if draw(st.booleans()):
                headers[name] = draw(latin1_text)
    extra = draw(st.dictionaries(
        st.one_of(st.sampled_from(HEADER_NAMES),
                  st.text(string.ascii_letters + "-", min_size=1, max_size=20)),
        latin1_text, max_size=4))
    headers.update(extra)
    return headers


@st.composite
def requests(draw, world: World, table: list[tuple[str, tuple[str, ...]]]):
    choice = draw(st.integers(0, len(table)))  # len(table): a path no route owns (the proxy)
    if choice == len(table):
        segments = draw(st.lists(segment, min_size=1, max_size=4))
        path = API_PREFIX + "/" + "/".join(segments)
        served: tuple[str, ...] = METHODS
    else:
        template, served = table[choice]

        def fill(match: re.Match) -> str:
            if draw(st.integers(0, 3)) == 0:
                return draw(segment)
            return quote(world.param(match.group(1)), safe="")

        path = API_PREFIX + re.sub(r"\{(\w+)\}", fill, template)
        if draw(st.integers(0, 9)) == 0:
            path += draw(st.sampled_from(["/", "/extra", "//", "/..", "%2f..", "?"]))
    method = draw(st.one_of(st.sampled_from(served), st.sampled_from(METHODS)))
    headers = draw(header_sets(world))
    body, content_type = draw(bodies())
    if content_type is not None:
        headers["Content-Type"] = content_type
    query = draw(st.one_of(st.just(""), st.sampled_from(
        ["req_id=" + "0" * 36, "req_id=", "req_id=%00", "a=1&a=2", "%", "x=" + "y" * 3000]),
        st.text(max_size=30).map(lambda s: quote(s, safe="=&"))))
    return method, path.rstrip("?"), query, headers, body


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.no_openapi_check  # the contract itself is checked by the schemathesis suite
def test_generated_requests_never_500_always_envelope(world, unhandled):
    table = route_table(world.gateway)
    assert len(table) >= 30, "every plugin's routes should be loaded"

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=requests(world, table))
    def run(request) -> None:
        method, path, query, headers, body = request
        result = world.client.simulate_request(method, path, query_string=query or None,
                                               headers=headers, body=body)
        check_answer(method, path, result)
        assert not unhandled.records, (
            f"{method} {path[:200]}: unhandled exception logged: "
            f"{unhandled.records[0].getMessage()}")

    run()


@pytest.mark.no_openapi_check
def test_every_route_refuses_an_oversized_body_with_413(world, unhandled):
    """Every route that reads a JSON body (it answers 400 to a broken one) answers 413 to one
    over FLOWORK_MAX_BODY_BYTES, declared or not."""
    reads_body = []
    for template, served in route_table(world.gateway):
        path = API_PREFIX + re.sub(r"\{(\w+)\}", lambda m: world.param(m.group(1)), template)
        for method in served:
            if method not in ("POST", "PUT", "PATCH"):
                continue
            headers = {**world.owner_auth(), "X-Engine-Token": world.engine_token,
                       "X-API-Key": SERVICE_SECRET}
            broken = world.client.simulate_request(method, path, headers=headers, body=b"{")
            check_answer(method, path, broken)
            if broken.status_code != 400:
                continue  # does not read a body
            reads_body.append(f"{method} {template}")
            big = world.client.simulate_request(
                method, path, headers={**headers, "Content-Type": "application/json"},
                body=b'{"name": "' + b"x" * (MAX_BODY + 10) + b'"}')
            check_answer(method, path, big)
            assert big.status_code == 413, f"{method} {template}: {big.status_code} {big.text}"
            assert big.json["code"] == "body_too_large"
    assert len(reads_body) >= 8, reads_body
    assert not unhandled.records


def test_oversized_auth_headers_are_refused_before_any_work(world):
    address = world.owner.address
    for name, value in (("X-Signed-Message", "flowork_api_auth|" + address + "|" + "1" * 20000),
                        ("X-Signature", "0x" + "ab" * 5000),
                        ("X-User-Address", address + "0" * 5000)):
        headers = {**world.owner_headers, name: value}
        r = world.client.simulate_get(API_PREFIX + "/auth/profile", headers=headers)
        assert r.status_code == 401, r.text
        assert r.json["code"] in ("malformed_message", "invalid_signature", "address_mismatch")
    r = world.client.simulate_get(API_PREFIX + "/engine/get-engine-auth-info",
                                  headers={"X-Engine-Token": "dev_engine_" + "A" * 20000})
    assert r.status_code == 401 and r.json["code"] == "invalid_engine_token"


def test_proxied_upload_over_the_limit_is_refused_without_reaching_the_engine(world):
    before = len(world.stub.requests)
    r = world.client.simulate_post(API_PREFIX + "/workflows/run", body=b"x" * (MAX_UPLOAD + 1),
                                   headers={**world.owner_headers,
                                            "Content-Type": "application/octet-stream"})
    assert r.status_code == 413 and r.json["code"] == "body_too_large"
    assert len(world.stub.requests) == before


def test_proxied_dot_segments_never_reach_the_engine(world):
    """In-process variant (the real-server one sends raw request targets)."""
    for path in ("/..", "/%2e%2e/secret", "/a/../../secret", "/a/%2e%2e/%2e%2e/x", "/.%2e/x",
                 "/a/..%2f..%2fx", "/a/..%5c..%5cx", "/%2e/x"):
        r = world.client.simulate_get(API_PREFIX + path, headers=world.owner_headers)
        check_answer("GET", path, r)
        assert r.status_code == 404, (path, r.status_code, r.text)
    assert all(p.startswith(API_PREFIX + "/") for p in world.stub.paths())
    r = world.client.simulate_get(API_PREFIX + "/workflows/a%2Fb", headers=world.owner_headers)
    assert r.status_code == 200
    assert world.stub.paths()[-1] == API_PREFIX + "/workflows/a/b"
