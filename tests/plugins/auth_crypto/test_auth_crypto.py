"""auth_crypto through the HTTP API: user principals from Ethereum signatures, /auth routes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import threading
import time
from pathlib import Path

import falcon
import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_kernel import Account, GatewayError, GatewayPlugin, Route, hookimpl
from gateway_kernel.db import deactivate
from gateway_kernel.http import send_json
from gateway_plugins.auth_crypto import verify
from gateway_plugins.auth_crypto.signing import Signer, encode_b64_message, legacy_message, siwe_message

VECTORS = json.loads((Path(__file__).parent / "vectors" / "signatures.json").read_text())["vectors"]
VECTOR_DOMAIN = "app.flowork.example"
N = verify.SECP256K1_N


class WhoAmI:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, {"address": req.context.principal.account.address})


class Probe(GatewayPlugin):
    """A user route that touches no table itself: any query is the auth scheme's."""

    name = "probe"

    @hookimpl
    def gateway_routes(self, gateway):
        return [Route("/probe/whoami", WhoAmI(), "user")]


@pytest.fixture
def auth_gateway(make_gateway):
    """Only the auth plugins plus the probe route: nothing else queries the database."""
    return make_gateway(plugins="auth_crypto,auth_internal", extra_plugins=[Probe()])


def client_for(gateway) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(gateway)


def set_clock(gateway, now: float) -> None:
    gateway.plugins["auth_crypto"].scheme.clock = lambda: now


def profile(client, headers):
    return client.simulate_get("/api/v1/auth/profile", headers=headers)


def assert_401(result, code: str) -> None:
    assert result.status_code == 401, result.text
    assert result.json["code"] == code
    assert set(result.json) == {"error", "code"}


def count_queries(monkeypatch, gateway) -> list[str]:
    """Record every SQL statement the gateway's database runs from now on."""
    seen: list[str] = []
    original = gateway.db.execute_sql

    def execute_sql(sql, *args, **kwargs):
        seen.append(sql)
        return original(sql, *args, **kwargs)

    monkeypatch.setattr(gateway.db, "execute_sql", execute_sql)
    return seen


# -- the happy paths -------------------------------------------------------------------------


def test_legacy_message_logs_in_and_registers_with_defaults(client, signer) -> None:
    result = profile(client, signer.headers())
    assert result.status_code == 200, result.text
    address = signer.address
    assert result.json == {
        "user_id": address,
        "public_address": address,
        "username": address,
        "email": address.lower() + "@flowork.crypto",
        "tier": "architect",
        "permissions": result.json["permissions"],
        "license_expires_at": None,
    }
    assert result.json["permissions"] and all(isinstance(p, str) for p in result.json["permissions"])


def test_siwe_message_logs_in(client, signer) -> None:
    result = profile(client, signer.siwe_headers(domain="localhost"))
    assert result.status_code == 200, result.text
    assert result.json["user_id"] == signer.address


def test_same_legacy_message_is_reusable_within_its_window(client, signer) -> None:
    headers = signer.headers()
    for _ in range(3):
        assert profile(client, headers).status_code == 200


def test_payload_version_and_engine_id_headers_are_ignored(client, signer) -> None:
    headers = {**signer.headers(), "X-Payload-Version": "999", "X-Flowork-Engine-ID": "x"}
    assert profile(client, headers).status_code == 200


def test_address_case_variants_are_one_user(client, signer) -> None:
    lower = signer.address.lower()
    upper = "0x" + signer.address[2:].upper()
    ids = set()
    for header_address, message_address in [
        (signer.address, signer.address),
        (lower, lower),
        (upper, signer.address),
    ]:
        headers = signer.headers(message=legacy_message(message_address))
        headers["X-User-Address"] = header_address
        result = profile(client, headers)
        assert result.status_code == 200, result.text
        ids.add(result.json["user_id"])
    assert ids == {signer.address}


def test_any_user_route_registers_a_new_address(auth_gateway, signer) -> None:
    result = client_for(auth_gateway).simulate_get("/api/v1/probe/whoami", headers=signer.headers())
    assert result.status_code == 200
    assert result.json == {"address": signer.address.lower()}
    with auth_gateway.using_db():
        account = Account.get(Account.address == signer.address.lower())
    auth_gateway.release_db()
    assert account.public_address == signer.address
    assert account.email == signer.address.lower() + "@flowork.crypto"


def test_register_and_login_are_not_implemented(client) -> None:
    for path in ("/api/v1/auth/register", "/api/v1/auth/login"):
        result = client.simulate_post(path, json={"anything": 1})
        assert result.status_code == 501
        assert result.json["code"] == "not_implemented"
        assert result.json["error"].startswith("Not Implemented: ")


# -- independent vectors (ethers.js) -----------------------------------------------------------


def _vector_cases():
    for vector in VECTORS:
        for form, signature in vector["signatures"].items():
            yield pytest.param(vector, signature, id=f"{vector['name']}-{form}")


def test_vectors_are_sound_under_an_independent_backend() -> None:
    """The committed vectors recover to their signers with eth_keys' pure-Python backend,
    so they check the code under test rather than agree with it."""
    from eth_keys import KeyAPI
    from eth_keys.backends import NativeECCBackend

    native = KeyAPI(backend=NativeECCBackend())
    forms = set()
    for vector in VECTORS:
        if vector.get("expect"):
            continue
        for form, signature in vector["signatures"].items():
            forms.add(form)
            raw = bytes.fromhex(signature[2:])
            r, s, v = int.from_bytes(raw[:32]), int.from_bytes(raw[32:64]), raw[64]
            v = v - 27 if v >= 27 else v
            if s > N // 2:  # the high-s twin is the same key's signature: fold it
                s, v = N - s, v ^ 1
            key = native.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(
                verify.eip191_hash(vector["text"].encode()))
            assert key.to_checksum_address() == vector["address"]
    assert forms == {"v27", "v01", "high_s"}
    assert any(int(v["signatures"]["high_s"][66:130], 16) > N // 2 for v in VECTORS
               if "high_s" in v["signatures"])


@pytest.mark.parametrize(("vector", "signature"), list(_vector_cases()))
def test_vectors_through_http(make_gateway, vector, signature) -> None:
    gateway = make_gateway(plugins="auth_crypto,auth_internal",
                           settings={"FLOWORK_GATEWAY_DOMAIN": VECTOR_DOMAIN})
    set_clock(gateway, dt.datetime(2023, 11, 14, 22, 14, tzinfo=dt.UTC).timestamp()
              if vector["header"].startswith("flowork") else
              dt.datetime(2024, 1, 1, 0, 30, tzinfo=dt.UTC).timestamp())
    headers = {"X-User-Address": vector["address"], "X-Signature": signature,
               "X-Signed-Message": vector["header"]}
    result = profile(client_for(gateway), headers)
    if vector.get("expect"):
        assert_401(result, vector["expect"])
    else:
        assert result.status_code == 200, result.text
        assert result.json["user_id"] == vector["address"]


def test_high_s_twin_and_v01_form_are_the_same_identity(make_gateway) -> None:
    gateway = make_gateway(plugins="auth_crypto,auth_internal")
    vector = VECTORS[0]
    set_clock(gateway, 1700000000)
    client = client_for(gateway)
    ids = set()
    for signature in vector["signatures"].values():
        headers = {"X-User-Address": vector["address"], "X-Signature": signature,
                   "X-Signed-Message": vector["header"]}
        ids.add(profile(client, headers).json["user_id"])
    assert ids == {vector["address"]}


# -- refusals ------------------------------------------------------------------------------------


def test_no_credentials_is_missing_auth(client) -> None:
    assert_401(client.simulate_get("/api/v1/auth/profile"), "missing_auth")


@pytest.mark.parametrize("drop", ["X-User-Address", "X-Signature", "X-Signed-Message"])
def test_incomplete_credentials_are_missing_auth(client, signer, drop) -> None:
    headers = signer.headers()
    del headers[drop]
    assert_401(profile(client, headers), "missing_auth")


def _with(headers: dict[str, str], **changes: str) -> dict[str, str]:
    result = dict(headers)
    for key, value in changes.items():
        result[key.replace("_", "-")] = value
    return result


def _siwe_signed(signer: Signer, text: str) -> dict[str, str]:
    return {"X-User-Address": signer.address, "X-Signature": signer.sign(text),
            "X-Signed-Message": encode_b64_message(text)}


def _negative_cases(signer: Signer, other: Signer) -> dict[str, tuple[dict[str, str], str]]:
    now = int(time.time())
    good = signer.headers()
    sig = good["X-Signature"]
    utc = dt.datetime.now(dt.UTC)
    no_expiry = "\n".join(line for line in siwe_message(signer.address).split("\n")
                          if not line.startswith("Expiration Time"))
    return {
        "stale": (signer.headers(timestamp=now - 301), "stale_signature"),
        "future": (signer.headers(timestamp=now + 120), "stale_signature"),
        "tampered message": (
            _with(good, X_Signed_Message=legacy_message(signer.address, now - 1)),
            "invalid_signature"),
        "message names another address": (
            signer.headers(message=legacy_message(other.address)), "address_mismatch"),
        "header names another signer": (
            _with(good, X_User_Address=other.address,
                  X_Signed_Message=legacy_message(other.address, now)),
            "invalid_signature"),
        "arbitrary text": (signer.headers(message="Welcome to OpenSea! Click to sign in"),
                           "malformed_message"),
        "legacy with extra field": (
            signer.headers(message=legacy_message(signer.address) + "|x"), "malformed_message"),
        "siwe for another domain": (signer.siwe_headers(domain="evil.example"),
                                    "malformed_message"),
        "siwe expired": (signer.siwe_headers(issued_at=utc - dt.timedelta(hours=2),
                                             lifetime_s=3600), "stale_signature"),
        "siwe over-long lifetime": (signer.siwe_headers(lifetime_s=86401), "malformed_message"),
        "siwe not before in the future": (
            signer.siwe_headers(not_before=utc + dt.timedelta(minutes=10)), "stale_signature"),
        "siwe issued in the future": (
            signer.siwe_headers(issued_at=utc + dt.timedelta(minutes=10)), "stale_signature"),
        "siwe without expiration": (_siwe_signed(signer, no_expiry), "malformed_message"),
        "siwe short nonce": (signer.siwe_headers(nonce="abc123"), "malformed_message"),
        "siwe other address": (_siwe_signed(signer, siwe_message(other.address)),
                               "address_mismatch"),
        "siwe raw (not b64)": (
            _with(good, X_Signed_Message=siwe_message(signer.address).replace("\n", " ")),
            "malformed_message"),
        "b64 garbage": (_with(good, X_Signed_Message="b64:!!!notbase64"), "malformed_message"),
        "b64 not utf-8": (_with(good, X_Signed_Message="b64:" + base64.urlsafe_b64encode(
            b"\xff\xfe\xfd").decode()), "malformed_message"),
        "garbage hex signature": (_with(good, X_Signature="0x" + "zz" * 65), "invalid_signature"),
        "signature without 0x": (_with(good, X_Signature=sig[2:] + "00"), "invalid_signature"),
        "signature too short": (_with(good, X_Signature=sig[:-2]), "invalid_signature"),
        "signature too long": (_with(good, X_Signature=sig + "00"), "malformed_message"),
        "signature v=29": (_with(good, X_Signature=sig[:-2] + "1d"), "invalid_signature"),
        "signature r=0": (_with(good, X_Signature="0x" + "00" * 32 + sig[66:]),
                          "invalid_signature"),
        "signature s=n": (_with(good, X_Signature=sig[:66] + f"{N:064x}" + sig[-2:]),
                          "invalid_signature"),
        "signature that recovers no key": (
            # r = 5: no curve point has x = 5, so nothing can be recovered.
            _with(good, X_Signature="0x" + f"{5:064x}" + "11" * 32 + "1b"),
            "invalid_signature"),
        "address too short": (_with(good, X_User_Address=signer.address[:-1]),
                              "malformed_message"),
        "address not hex": (_with(good, X_User_Address="0x" + "g" * 40), "malformed_message"),
        "oversized address header": (_with(good, X_User_Address="0x" + "a" * 5000),
                                     "malformed_message"),
        "oversized message header": (_with(good, X_Signed_Message="b64:" + "A" * 10_000),
                                     "malformed_message"),
    }


NEGATIVE_NAMES = list(_negative_cases(Signer.new(), Signer.new()))


@pytest.mark.parametrize("case", NEGATIVE_NAMES)
def test_refusals_have_specific_codes(make_gateway, case) -> None:
    gateway = make_gateway(plugins="auth_crypto,auth_internal", extra_plugins=[Probe()])
    signer, other = Signer.new(), Signer.new()
    headers, code = _negative_cases(signer, other)[case]
    result = client_for(gateway).simulate_get("/api/v1/probe/whoami", headers=headers)
    assert_401(result, code)
    assert headers["X-Signature"] not in result.text  # never echo the signature


def test_siwe_chain_id_allow_list(make_gateway, signer) -> None:
    gateway = make_gateway(plugins="auth_crypto,auth_internal",
                           settings={"FLOWORK_SIWE_CHAIN_IDS": "1, 137"})
    client = client_for(gateway)
    assert profile(client, signer.siwe_headers(chain_id=137)).status_code == 200
    assert_401(profile(client, signer.siwe_headers(chain_id=5)), "malformed_message")


def test_window_and_skew_are_configurable(make_gateway, signer) -> None:
    gateway = make_gateway(plugins="auth_crypto,auth_internal",
                           settings={"FLOWORK_AUTH_WINDOW_S": "30",
                                     "FLOWORK_AUTH_FUTURE_SKEW_S": "0"})
    client = client_for(gateway)
    now = int(time.time())
    assert profile(client, signer.headers(timestamp=now - 10)).status_code == 200
    assert_401(profile(client, signer.headers(timestamp=now - 60)), "stale_signature")
    assert_401(profile(client, signer.headers(timestamp=now + 5)), "stale_signature")


# -- speed: coincurve, cache --------------------------------------------------------------------


def test_recovery_uses_coincurve(monkeypatch, auth_gateway, signer) -> None:
    import coincurve
    from eth_keys.backends import CoinCurveECCBackend

    assert isinstance(verify.KEYS.backend, CoinCurveECCBackend)
    calls = []
    original = coincurve.keys.PublicKey.from_signature_and_message

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(coincurve.keys.PublicKey, "from_signature_and_message", spy)
    # eth_keys' default backend follows this variable; ours must not.
    monkeypatch.setenv("ECC_BACKEND_CLASS", "eth_keys.backends.NativeECCBackend")
    client = client_for(auth_gateway)
    headers = signer.headers()
    assert client.simulate_get("/api/v1/probe/whoami", headers=headers).status_code == 200
    assert len(calls) == 1
    # The second request with the same signature is served from the cache: no recovery.
    assert client.simulate_get("/api/v1/probe/whoami", headers=headers).status_code == 200
    assert len(calls) == 1


def test_warm_request_makes_one_spent_signature_lookup(monkeypatch, auth_gateway, signer) -> None:
    client = client_for(auth_gateway)
    headers = signer.headers()
    queries = count_queries(monkeypatch, auth_gateway)
    assert client.simulate_get("/api/v1/probe/whoami", headers=headers).status_code == 200
    assert queries  # the first one registered the user
    queries.clear()
    assert client.simulate_get("/api/v1/probe/whoami", headers=headers).status_code == 200
    # No account read, no recovery: only whether another instance saw this signature spent
    # (shared state, so it cannot be cached as "not spent").
    assert len(queries) == 1 and "auth_crypto_spent_signature" in queries[0]


def test_cached_signature_never_outlives_its_message(make_gateway, signer) -> None:
    gateway = make_gateway(plugins="auth_crypto,auth_internal")
    client = client_for(gateway)
    now = int(time.time())
    set_clock(gateway, now)
    headers = signer.headers(timestamp=now)
    assert profile(client, headers).status_code == 200
    set_clock(gateway, now + 301)
    assert_401(profile(client, headers), "stale_signature")

    utc = dt.datetime.fromtimestamp(now, dt.UTC)
    siwe = signer.siwe_headers(issued_at=utc, lifetime_s=600)
    set_clock(gateway, now)
    assert profile(client, siwe).status_code == 200
    set_clock(gateway, now + 600)
    assert_401(profile(client, siwe), "stale_signature")


def test_failures_are_not_cached(make_gateway, signer) -> None:
    gateway = make_gateway(plugins="auth_crypto,auth_internal")
    client = client_for(gateway)
    now = time.time()
    not_before = dt.datetime.fromtimestamp(int(now) + 30, dt.UTC)
    headers = signer.siwe_headers(not_before=not_before)
    set_clock(gateway, now)
    assert_401(profile(client, headers), "stale_signature")
    set_clock(gateway, now + 31)
    assert profile(client, headers).status_code == 200


# -- logout / revocation ---------------------------------------------------------------------


SKEW_S = 15  # FLOWORK_AUTH_FUTURE_SKEW_S default (API.md)


def test_logout_revokes_earlier_messages_and_allows_later_ones(gateway, signer) -> None:
    client = client_for(gateway)
    now = int(time.time())
    set_clock(gateway, now)
    before = signer.headers(timestamp=now - 5)
    siwe_before = signer.siwe_headers(issued_at=dt.datetime.fromtimestamp(now - 5, dt.UTC))
    assert profile(client, before).status_code == 200
    assert profile(client, siwe_before).status_code == 200
    result = client.simulate_post("/api/v1/auth/logout", headers=before)
    assert result.status_code == 200
    assert isinstance(result.json["message"], str)
    assert_401(profile(client, before), "revoked")
    assert_401(profile(client, siwe_before), "revoked")
    assert_401(profile(client, signer.headers(timestamp=now - 1)), "revoked")
    # Signed after the cut-off (now + skew) has passed: works (legacy and SIWE).
    set_clock(gateway, now + SKEW_S + 2)
    assert profile(client, signer.headers(timestamp=now + SKEW_S + 1)).status_code == 200
    later = dt.datetime.fromtimestamp(now + SKEW_S + 1, dt.UTC)
    assert profile(client, signer.siwe_headers(issued_at=later)).status_code == 200


def test_future_dated_messages_die_with_the_logout(gateway, signer) -> None:
    """Issue 14 finding 4: a message dated ahead (inside the allowed skew) used to survive
    the logout, including the one that logged out."""
    client = client_for(gateway)
    now = int(time.time())
    set_clock(gateway, now)
    ahead = signer.headers(timestamp=now + 10)
    assert profile(client, ahead).status_code == 200
    assert client.simulate_post("/api/v1/auth/logout", headers=ahead).status_code == 200
    # Cut-off: the logout message's own date (now + 10) + skew (15) = now + 25.
    result = profile(client, ahead)
    assert_401(result, "revoked")
    assert result.headers["Retry-After"] == "25"
    # A new message, dated as far ahead as the skew allows, is still inside the cut-off.
    result = profile(client, signer.headers(timestamp=now + SKEW_S))
    assert_401(result, "revoked")
    assert result.headers["Retry-After"] == "25"
    set_clock(gateway, now + 20)
    assert profile(client, ahead).headers["Retry-After"] == "5"
    # Once the cut-off has passed, a freshly signed message works; the old ones never again.
    set_clock(gateway, now + 26)
    assert profile(client, signer.headers(timestamp=now + 26)).status_code == 200
    result = profile(client, ahead)
    assert_401(result, "revoked")
    assert result.headers["Retry-After"] == "0"


def test_a_later_logout_never_moves_the_cut_off_back(make_gateway, signer) -> None:
    first, second = make_gateway(), make_gateway()
    a, b = client_for(first), client_for(second)
    now = int(time.time())
    set_clock(first, now)
    set_clock(second, now)
    assert a.simulate_post("/api/v1/auth/logout",
                           headers=signer.headers(timestamp=now + 10)).status_code == 200
    # A message from before the first cut-off cannot log out again, and the stored cut-off
    # (now + 25) stays even if another instance's clock would compute an earlier one.
    second.plugins["auth_crypto"].scheme.logout(
        second.plugins["auth_crypto"].scheme.account(signer.address.lower()).account, now - 100)
    set_clock(second, now + 24)
    assert_401(profile(b, signer.headers(timestamp=now + 24)), "revoked")


def test_logout_does_not_touch_other_users(client, make_signer) -> None:
    alice, bob = make_signer(), make_signer()
    bob_headers = bob.headers()
    assert profile(client, bob_headers).status_code == 200
    assert client.simulate_post("/api/v1/auth/logout", headers=alice.headers()).status_code == 200
    assert profile(client, bob_headers).status_code == 200


def test_logout_is_seen_by_another_instance_within_5_seconds(make_gateway, signer) -> None:
    first, second = make_gateway(), make_gateway()  # two instances, one database
    a, b = client_for(first), client_for(second)
    now = int(time.time())
    headers = signer.headers(timestamp=now - 1)
    assert profile(a, headers).status_code == 200
    assert profile(b, headers).status_code == 200  # now cached on the second instance
    assert a.simulate_post("/api/v1/auth/logout", headers=headers).status_code == 200
    logged_out, logged_out_wall = time.monotonic(), time.time()
    assert_401(profile(a, headers), "revoked")
    while True:
        result = profile(b, headers)
        if result.status_code == 401:
            break
        assert result.status_code == 200
        assert time.monotonic() - logged_out < 5, "second instance still accepts the signature"
        time.sleep(0.1)
    assert_401(result, "revoked")
    # The cut-off is at most the logout's second, rounded up, plus the skew (on a loaded
    # machine the logout may land seconds after ``now``).
    cutoff_bound = math.ceil(logged_out_wall) + SKEW_S
    set_clock(second, cutoff_bound + 2)
    assert profile(b, signer.headers(timestamp=cutoff_bound + 1)).status_code == 200


def test_concurrent_first_requests_create_one_user(make_gateway, signer) -> None:
    gateway = make_gateway(plugins="auth_crypto,auth_internal", extra_plugins=[Probe()])
    client = client_for(gateway)
    headers = signer.headers()
    statuses: list[int] = []
    start = threading.Barrier(8)

    def hit() -> None:
        start.wait()
        statuses.append(client.simulate_get("/api/v1/probe/whoami", headers=headers).status_code)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    with gateway.using_db():
        assert Account.select().where(Account.address == signer.address.lower()).count() == 1
    gateway.release_db()


# -- account hooks ----------------------------------------------------------------------------


def _find(gateway, identifier: str):
    token = gateway.activate()
    try:
        return gateway.find_account(identifier)
    finally:
        deactivate(token)
        gateway.release_db()


def test_resolve_account_accepts_canonical_forms_and_creates(auth_gateway, signer) -> None:
    lower = signer.address.lower()
    upper = "0x" + signer.address[2:].upper()
    accounts = [_find(auth_gateway, form) for form in (signer.address, lower, upper)]
    assert {a.id for a in accounts} == {accounts[0].id}
    assert accounts[0].address == lower
    assert accounts[0].username == signer.address


def test_resolve_account_refuses_a_bad_checksum(auth_gateway, signer) -> None:
    body = signer.address[2:]
    # Flip the case of one letter: still mixed case, checksum now wrong.
    i = next(i for i, c in enumerate(body) if c.isalpha())
    broken = "0x" + body[:i] + body[i].swapcase() + body[i + 1:]
    with pytest.raises(GatewayError) as caught:
        _find(auth_gateway, broken)
    assert caught.value.code == "invalid_identifier"
    assert caught.value.status_code == 400


def test_resolve_account_leaves_usernames_to_the_kernel(auth_gateway) -> None:
    assert _find(auth_gateway, "nobody-by-that-name") is None


# -- OpenAPI -------------------------------------------------------------------------------------


def test_openapi_describes_auth_routes_and_security_schemes(client) -> None:
    doc = client.simulate_get("/api/v1/openapi.json").json
    for path in ("/auth/profile", "/auth/logout", "/auth/register", "/auth/login"):
        assert path in doc["paths"]
    assert "401" in doc["paths"]["/auth/profile"]["get"]["responses"]
    assert "501" in doc["paths"]["/auth/login"]["post"]["responses"]
    schemes = doc["components"]["securitySchemes"]
    found = {name: (s["in"], s["name"]) for name, s in schemes.items()}
    assert found.items() >= {
        "UserAddress": ("header", "X-User-Address"),
        "UserSignature": ("header", "X-Signature"),
        "UserSignedMessage": ("header", "X-Signed-Message"),
        "EngineToken": ("header", "X-Engine-Token"),
        "ApiKey": ("header", "X-API-Key"),
    }.items()


# -- SIWE format details ----------------------------------------------------------------------


def _siwe_lines(address: str, **replace: str) -> list[str]:
    utc = dt.datetime.now(dt.UTC).replace(microsecond=0)
    fields = {
        "header": "localhost wants you to sign in with your Ethereum account:",
        "address": address,
        "statement": "Sign in to Flowork.",
        "URI": "https://localhost/login",
        "Version": "1",
        "Chain ID": "1",
        "Nonce": "abcd1234EFGH",
        "Issued At": (utc - dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Expiration Time": (utc + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    fields.update(replace)
    lines = [fields["header"], fields["address"], ""]
    if fields["statement"] is not None:
        lines += [fields["statement"], ""]
    for key in ("URI", "Version", "Chain ID", "Nonce", "Issued At", "Expiration Time"):
        lines.append(f"{key}: {fields[key]}")
    return lines


def _siwe_text(signer: Signer, variant: str) -> str:
    lines = _siwe_lines(signer.address)
    utc = dt.datetime.now(dt.UTC)
    if variant == "plain":
        pass
    elif variant == "no statement, one blank line":
        lines = _siwe_lines(signer.address, statement=None)
    elif variant == "no statement, two blank lines (EIP-4361 ABNF)":
        lines = _siwe_lines(signer.address, statement=None)
        lines.insert(3, "")
    elif variant == "scheme prefix on the domain":
        lines[0] = "https://localhost wants you to sign in with your Ethereum account:"
    elif variant == "lowercase address":
        lines = _siwe_lines(signer.address.lower())
    elif variant == "offset and fractional times":
        lines[-2] = "Issued At: " + (utc - dt.timedelta(seconds=5)).astimezone(
            dt.timezone(dt.timedelta(hours=2))).isoformat(timespec="milliseconds")
    elif variant == "not before, request id and resources":
        lines += ["Not Before: " + (utc - dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "Request ID: req-42", "Resources:", "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual",
                  "- https://example.com/my-web2-claim.json"]
    # refused:
    elif variant == "bad checksum address":
        body = signer.address[2:]
        i = next(i for i, c in enumerate(body) if c.isalpha())
        lines[1] = "0x" + body[:i] + body[i].swapcase() + body[i + 1:]
    elif variant == "trailing newline":
        lines.append("")
    elif variant == "CRLF line breaks":
        return "\r\n".join(lines)
    elif variant == "Version 2":
        lines = _siwe_lines(signer.address, Version="2")
    elif variant == "Chain ID not a number":
        lines = _siwe_lines(signer.address, **{"Chain ID": "mainnet"})
    elif variant == "nonce with symbols":
        lines = _siwe_lines(signer.address, Nonce="abcd-1234-efgh")
    elif variant == "time without offset":
        lines = _siwe_lines(signer.address, **{"Issued At": "2024-01-01T00:00:00"})
    elif variant == "fields out of order":
        lines[-3], lines[-4] = lines[-4], lines[-3]
    elif variant == "unknown field":
        lines.append("Favourite Colour: blue")
    elif variant == "statement over two lines":
        lines[3:4] = ["line one", "line two"]
    elif variant == "expiration before issued at":
        lines = _siwe_lines(signer.address, **{
            "Expiration Time": (utc - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    elif variant == "missing uri":
        lines = [line for line in lines if not line.startswith("URI: ")]
    else:  # pragma: no cover
        raise AssertionError(variant)
    return "\n".join(lines)


SIWE_ACCEPTED = ["plain", "no statement, one blank line",
                 "no statement, two blank lines (EIP-4361 ABNF)", "scheme prefix on the domain",
                 "lowercase address", "offset and fractional times",
                 "not before, request id and resources"]
SIWE_REFUSED = ["bad checksum address", "trailing newline", "CRLF line breaks", "Version 2",
                "Chain ID not a number", "nonce with symbols", "time without offset",
                "fields out of order", "unknown field", "statement over two lines",
                "expiration before issued at", "missing uri"]


@pytest.mark.parametrize("variant", SIWE_ACCEPTED + SIWE_REFUSED)
def test_siwe_parser(auth_gateway, signer, variant) -> None:
    text = _siwe_text(signer, variant)
    result = client_for(auth_gateway).simulate_get("/api/v1/probe/whoami",
                                                   headers=_siwe_signed(signer, text))
    if variant in SIWE_ACCEPTED:
        assert result.status_code == 200, result.text
    else:
        assert_401(result, "malformed_message")


def test_siwe_b64_padding_is_optional(auth_gateway, signer) -> None:
    text = next(t for t in (siwe_message(signer.address, statement="x" * n) for n in range(1, 4))
                if len(t.encode()) % 3)  # so that base64 needs padding
    headers = _siwe_signed(signer, text)
    padded = "b64:" + base64.urlsafe_b64encode(text.encode()).decode()
    assert padded.endswith("=") and not headers["X-Signed-Message"].endswith("=")
    client = client_for(auth_gateway)
    for message in (headers["X-Signed-Message"], padded):
        result = client.simulate_get("/api/v1/probe/whoami",
                                     headers={**headers, "X-Signed-Message": message})
        assert result.status_code == 200, result.text


def test_cheap_checks_run_before_key_recovery(monkeypatch, auth_gateway, signer) -> None:
    import coincurve

    calls = []
    original = coincurve.keys.PublicKey.from_signature_and_message
    monkeypatch.setattr(coincurve.keys.PublicKey, "from_signature_and_message",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    client = client_for(auth_gateway)
    now = int(time.time())
    refused = [
        signer.headers(timestamp=now - 1000),
        signer.headers(message="hello"),
        signer.siwe_headers(domain="evil.example"),
        signer.siwe_headers(lifetime_s=10 * 86400),
        _with(signer.headers(), X_Signed_Message="b64:" + "A" * 9000),
    ]
    for headers in refused:
        assert client.simulate_get("/api/v1/probe/whoami", headers=headers).status_code == 401
    assert calls == []


# -- robustness: whatever the headers, a 401 envelope, never a 500 ---------------------------

_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_categories=("Cc",)),
    max_size=300,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    address=st.one_of(_header_text, st.from_regex(r"0x[0-9a-fA-F]{40}", fullmatch=True)),
    signature=st.one_of(_header_text, st.from_regex(r"0x[0-9a-fA-F]{130}", fullmatch=True)),
    message=st.one_of(
        _header_text,
        st.builds(lambda a, t: f"flowork_api_auth|{a}|{t}",
                  st.from_regex(r"0x[0-9a-fA-F]{40}", fullmatch=True),
                  st.integers(min_value=-10, max_value=10**13)),
        st.builds(lambda b: "b64:" + base64.urlsafe_b64encode(b).decode(), st.binary(max_size=400)),
    ),
)
def test_arbitrary_headers_never_break_auth(auth_gateway, address, signature, message) -> None:
    headers = {"X-User-Address": address, "X-Signature": signature, "X-Signed-Message": message}
    result = client_for(auth_gateway).simulate_get("/api/v1/probe/whoami", headers=headers)
    assert result.status_code == 401, result.text
    assert result.json["code"] in {"missing_auth", "malformed_message", "stale_signature",
                                   "address_mismatch", "invalid_signature"}
