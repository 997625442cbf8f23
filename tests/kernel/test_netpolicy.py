"""The one address policy (gateway_kernel/netpolicy.py): every disguise of a refused address is
refused by the policy, by the heartbeat (400 invalid_engine_url) and by the proxy's connect-time
guard; ordinary addresses in the same forms still pass; malformed hosts are refused; the
gateway's own listening address cannot be an engine URL."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from gateway_kernel import netpolicy
from gateway_kernel.netpolicy import AddressPolicy, URLRefused
from gateway_plugins.proxy.transport import EngineTransport, Exchange

API = "/api/v1"

# 169.254.169.254 = a9fe:a9fe, 168.63.129.16 = a83f:8110, 100.100.100.200 = 6464:64c8.
# The Teredo client address is stored inverted (RFC 4380): ~a9fea9fe = 56015601.
DISGUISED_HOSTS = [
    # IPv4 literal forms the C resolver accepts
    "169.254.169.254", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "169.254.43518",
    "0xa9.0xfe.0xa9.0xfe", "169.16689662", "168.63.129.16", "2822734096", "100.100.100.200",
    "192.0.0.192",
    # IPv4-mapped, -compatible and -translated
    "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[::169.254.169.254]",
    "[::ffff:0:a9fe:a9fe]", "[::ffff:168.63.129.16]", "[::a83f:8110]",
    # 6to4
    "[2002:a9fe:a9fe::1]", "[2002:a83f:8110::]", "[2002:6464:64c8::]",
    # NAT64, well-known prefix and the local-use /48 in its /96 and /48 layouts
    "[64:ff9b::a9fe:a9fe]", "[64:ff9b::168.63.129.16]", "[64:ff9b:1::a9fe:a9fe]",
    "[64:ff9b:1:a9fe:a9:fe00::]", "[64:ff9b::6464:64c8]",
    # Teredo: refused server, refused client
    "[2001:0:a9fe:a9fe::1]", "[2001:0:4136:e378:8000:63bf:5601:5601]",
    # metadata over IPv6, link-local, unspecified, multicast, broadcast
    "[fd00:ec2::254]", "[fd20:ce::254]", "[fe80::1]", "[febf::1]", "0.0.0.0",  # noqa: S104
    "0",
    "0.1.2.3", "[::]", "224.0.0.1", "[ff02::1]", "255.255.255.255", "[::ffff:255.255.255.255]",
]

# The same forms around addresses that are fine: the policy judges what is inside, it does
# not refuse a form as such.
ACCEPTED_HOSTS = [
    "10.0.0.1", "167772161", "[::ffff:10.0.0.1]", "[::ffff:0:a00:1]", "[2002:a00:1::]",
    "[64:ff9b::a00:1]", "[64:ff9b::10.0.0.1]", "[2001:db8::1]", "127.0.0.1", "[::1]",
    "192.168.1.20", "engine.example.com",
]

MALFORMED_URLS = [
    "http://a..b/",
    "http://" + "a" * 64 + ".example.com/",
    "http://[v1.fe]/",
    "http://.example.com/",
    "http://" + ".".join(["a" * 60] * 5) + "/",  # 304 characters
    "http://example.com:0/",
    "http://example.com:/",
    "http://example.com:+80/",
    "http://example.com:80x/",
    "http://example.com:65536/",
    "http://[::1]x/",
    "http://[fe80::1%25eth0]/",
    "http://exa%6dple.com/",
    "http://exa!mple.com/",
    "http://1.2.3.4.5/",
    "http://256.1.1.1/",
    "http://08.1.1.1/",
]


def url_of(host: str, port: int = 8989) -> str:
    return f"http://{host}:{port}"


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = netpolicy.literal_address(host.strip("[]"))
    assert address is not None
    return address


# -- the policy itself ----------------------------------------------------------------------


@pytest.mark.parametrize("host", DISGUISED_HOSTS)
def test_policy_refuses_every_disguise(host):
    policy = AddressPolicy()
    assert policy.refusal(ip_of(host)) is not None
    with pytest.raises(URLRefused):
        policy.check_url(url_of(host))


@pytest.mark.parametrize("host", ACCEPTED_HOSTS)
def test_policy_accepts_ordinary_addresses_in_the_same_forms(host):
    assert AddressPolicy().check_url(url_of(host) + "/") == url_of(host)


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_policy_refuses_malformed_hosts_and_ports(url):
    with pytest.raises(URLRefused):
        AddressPolicy().check_url(url)


@pytest.mark.parametrize("name", ["metadata.google.internal", "METADATA.goog.", "metadata",
                                  "instance-data.ec2.internal", "x.metadata.google.internal"])
def test_policy_refuses_metadata_host_names(name):
    with pytest.raises(URLRefused, match="metadata"):
        AddressPolicy().check_url(f"http://{name}/")


def test_allow_list_applies_to_embedded_addresses_and_refuses_names():
    policy = AddressPolicy([ipaddress.ip_network("10.0.0.0/8"),
                            ipaddress.ip_network("169.254.0.0/16")])
    assert policy.refusal(ipaddress.ip_address("10.1.2.3")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:10.1.2.3")) is None
    assert "outside" in policy.refusal(ipaddress.ip_address("192.168.0.1"))
    # Listing a link-local network does not make metadata reachable.
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) is not None
    with pytest.raises(URLRefused, match="IP address"):
        policy.check_url("http://engine.example.com")


def test_own_address_exact_and_loopback_name():
    policy = AddressPolicy(own_addresses=[("127.0.0.1", 8000)])
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 8000) is not None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1"), 8000) is not None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 8001) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None  # port unknown
    for url in ("http://127.0.0.1:8000", "http://localhost:8000/", "http://[::ffff:7f00:1]:8000"):
        with pytest.raises(URLRefused, match="own address"):
            policy.check_url(url)
    assert policy.check_url("http://127.0.0.1:8001") == "http://127.0.0.1:8001"


def _primary_address() -> str | None:
    """This host's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only selects the route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("0.") else address


def test_wildcard_listen_means_every_local_address_with_that_port():
    policy = AddressPolicy()
    policy.add_own_address("0.0.0.0", 8000)  # noqa: S104
    for host in ("127.0.0.1", "127.0.0.53", "[::ffff:127.0.0.1]"):
        with pytest.raises(URLRefused, match="own address"):
            policy.check_url(url_of(host, 8000))
    primary = _primary_address()
    if primary is not None:
        with pytest.raises(URLRefused, match="own address"):
            policy.check_url(url_of(primary, 8000))
    assert policy.check_url("http://127.0.0.1:8001") == "http://127.0.0.1:8001"
    # An address that is not this host's, on the same port, is someone else's server.
    assert policy.check_url("http://192.0.2.10:8000") == "http://192.0.2.10:8000"


def test_for_gateway_is_one_shared_policy(gateway):
    assert netpolicy.for_gateway(gateway) is netpolicy.for_gateway(gateway)


# -- through the HTTP heartbeat -------------------------------------------------------------


def _engine_token(client, signer) -> str:
    r = client.simulate_post(f"{API}/user/engines", json={"name": "e"}, headers=signer.headers())
    assert r.status_code == 201, r.text
    return r.json["raw_token"]


def _heartbeat(client, token, url):
    return client.simulate_post(f"{API}/engine/heartbeat", json={"url": url},
                                headers={"X-Engine-Token": token})


@pytest.mark.parametrize("url", [url_of(h) for h in DISGUISED_HOSTS] + MALFORMED_URLS)
def test_heartbeat_refuses_disguises_and_malformed_urls(client, signer, url):
    r = _heartbeat(client, _engine_token(client, signer), url)
    assert (r.status_code, r.json["code"]) == (400, "invalid_engine_url"), url


def test_heartbeat_accepts_ordinary_addresses(client, signer):
    token = _engine_token(client, signer)
    for host in ACCEPTED_HOSTS:
        assert _heartbeat(client, token, url_of(host)).status_code == 200, host


def test_heartbeat_refuses_the_gateways_own_address(gateway, client, signer):
    netpolicy.for_gateway(gateway).add_own_address("127.0.0.1", 8123)
    token = _engine_token(client, signer)
    for url in ("http://127.0.0.1:8123", "http://localhost:8123", "http://[::ffff:127.0.0.1]:8123"):
        r = _heartbeat(client, token, url)
        assert (r.status_code, r.json["code"]) == (400, "invalid_engine_url"), url
        assert "own address" in r.json["error"]
    assert _heartbeat(client, token, "http://127.0.0.1:8124").status_code == 200


# -- through the proxy's connect-time guard --------------------------------------------------


def _guarded_get(transport: EngineTransport, host: str, port: int) -> None:
    exchange = Exchange(5.0, 5.0, guard=True, uploading=False)
    raw_host = host.strip("[]").encode()
    with exchange.active():
        transport.send(b"GET", (b"http", raw_host, port), b"/",
                       [(b"host", host.encode())], b"", {}).read()


@pytest.mark.parametrize("host", DISGUISED_HOSTS)
def test_transport_guard_refuses_disguises(host):
    transport = EngineTransport(4, 4.0)
    try:
        with pytest.raises(httpx.ConnectError, match="may not use"):
            _guarded_get(transport, host, 8989)
    finally:
        transport.close()


def test_transport_guard_refuses_own_address(upstream):
    policy = AddressPolicy(own_addresses=[("127.0.0.1", upstream.port)])
    transport = EngineTransport(4, 4.0, policy)
    try:
        with pytest.raises(httpx.ConnectError, match="may not use"):
            _guarded_get(transport, "127.0.0.1", upstream.port)
        assert upstream.requests == []
    finally:
        transport.close()
    transport = EngineTransport(4, 4.0)  # not the gateway's own: it goes through
    try:
        _guarded_get(transport, "127.0.0.1", upstream.port)
        assert len(upstream.requests) == 1
    finally:
        transport.close()
