"""The one address policy for URLs and addresses that steer the gateway's outbound connections.

Engine URLs (heartbeat, realtime registration) and the proxy's connect-time guard all ask the
same :class:`AddressPolicy`, so a disguise refused by one is refused by all (issue 14). An
engine-reported URL is untrusted input that decides where the gateway connects (SSRF), so:

- Refused everywhere: link-local (169.254.0.0/16, fe80::/10), cloud metadata addresses and host
  names, unspecified (0.0.0.0/8, ::), multicast, broadcast, scoped IPv6 addresses, and the
  gateway's own listening address(es) (a proxy loop; a wildcard listen such as 0.0.0.0:8000
  means every local address with that port).
- Disguises are unwrapped and each embedded IPv4 address is judged too: IPv4-mapped
  (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d), 6to4
  (2002::/16), NAT64 (64:ff9b::/96, and every RFC 6052 layout of the local-use 64:ff9b:1::/48),
  Teredo (2001::/32, server and client), and the shorthand IPv4 forms the C resolver accepts
  (``2852039166``, ``0xa9.0xfe.0xa9.0xfe``, ``0251.0376.0251.0376``, ``169.254.43518``).
- An allow-list (``allowed_networks``, FLOWORK_ENGINE_NETWORKS): when set, an address must be
  inside one of the networks, and a URL's host must be an IP literal (a DNS name can point
  anywhere and change its answer after the check).

Loopback and private addresses are allowed by default (an engine on the gateway's host or LAN
is the common self-hosted case); operators narrow that with the allow-list.

:func:`for_gateway` gives the one policy of a gateway: the engines plugin sets its allow-list,
the server registers its listening sockets with :meth:`AddressPolicy.add_own_address`, and the
proxy's client checks every resolved address with :meth:`AddressPolicy.refusal`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import weakref
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LEN = 2048

#: Cloud instance-metadata endpoints (169.254.169.254 is link-local as well).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure IMDS, OpenStack, DigitalOcean, Oracle
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "168.63.129.16",  # Azure wireserver
    )
)
METADATA_HOSTNAMES: frozenset[str] = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
        "metadata.packet.net",
    }
)
_METADATA_SUFFIXES = (".metadata.google.internal",)

_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_LOOPBACKS = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))

_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
# What inet_aton would read as an IPv4 address: 1-4 dot-separated decimal/octal/hex numbers.
_INET_ATON_FORM = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")
# A last label that is a number makes WHATWG parsers read the host as IPv4: such a host
# is an IPv4 address or nothing.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
_NETLOC = re.compile(r"^(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]*))(?::(?P<port>[^:]*))?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class URLRefused(ValueError):
    """The URL is refused; the message says why (safe to show to whoever sent it)."""


def literal_address(host: str) -> IPAddress | None:
    """The IP address ``host`` denotes literally, in any form a resolver would accept, or None
    for a host name. Raises :class:`URLRefused` for a numeric host that is no valid IPv4."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _INET_ATON_FORM.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            pass
        raise URLRefused("host is not a valid IPv4 address")
    last = host.rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.match(last):
        raise URLRefused("host is not a valid IPv4 address")
    return None


def _rfc6052(address: ipaddress.IPv6Address, prefix_len: int) -> ipaddress.IPv4Address:
    """The IPv4 address embedded in ``address`` under a NAT64 prefix of ``prefix_len`` bits
    (RFC 6052 §2.2: bits 64-71 are skipped)."""
    packed = address.packed
    if prefix_len == 96:
        return ipaddress.IPv4Address(packed[12:16])
    start = prefix_len // 8
    octets = [b for i, b in enumerate(packed[start:], start) if i != 8]
    return ipaddress.IPv4Address(bytes(octets[:4]))


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address that traffic to ``address`` may end up at through a translation or
    tunnel mechanism (empty for plain IPv6 and for IPv4)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _IPV4_TRANSLATED or (
            address in _IPV4_COMPATIBLE and int(address) > 1):  # not :: or ::1
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address in _NAT64_WELL_KNOWN:
        found.append(_rfc6052(address, 96))
    elif address in _NAT64_LOCAL:
        # The operator picks the prefix length inside 64:ff9b:1::/48: judge every layout.
        found.extend(_rfc6052(address, n) for n in (48, 56, 64, 96))
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def _is_local(address: IPAddress) -> bool:
    """True if ``address`` belongs to this host (a socket can bind to it)."""
    if any(address in net for net in _LOOPBACKS if net.version == address.version):
        return True
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


class AddressPolicy:
    """Which addresses and URLs outbound connections to engines may use (module docstring)."""

    def __init__(self, allowed_networks: Sequence[Network] | None = None,
                 own_addresses: Iterable[tuple[str, int]] = ()) -> None:
        self.allowed_networks = allowed_networks
        self._own: set[tuple[IPAddress, int]] = set()
        self._own_any_v4: set[int] = set()  # ports listened on at 0.0.0.0
        self._own_any_v6: set[int] = set()  # ports listened on at ::
        for host, port in own_addresses:
            self.add_own_address(host, port)

    @property
    def allowed_networks(self) -> tuple[Network, ...]:
        """The allow-list; empty means any address the fixed rules accept."""
        return self._allowed

    @allowed_networks.setter
    def allowed_networks(self, networks: Sequence[Network] | None) -> None:
        self._allowed = tuple(ipaddress.ip_network(n) for n in networks or ())

    def add_own_address(self, host: str, port: int) -> None:
        """Record a socket the gateway listens on, so that no engine URL can point back at it.
        ``host`` may be a wildcard (``0.0.0.0``, ``::``, ``""``), an IP address or a name
        (resolved now)."""
        if host in ("", "*"):
            self._own_any_v4.add(port)
            self._own_any_v6.add(port)
            return
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                         for info in infos]
        for address in addresses:
            if address.is_unspecified:
                # A dual-stack :: socket also takes IPv4 connections.
                self._own_any_v4.add(port)
                if address.version == 6:
                    self._own_any_v6.add(port)
            else:
                self._own.add((address, port))

    def _is_own(self, address: IPAddress, port: int) -> bool:
        if (address, port) in self._own:
            return True
        wildcard = self._own_any_v4 if address.version == 4 else self._own_any_v6
        return port in wildcard and _is_local(address)

    def refusal(self, ip: IPAddress, port: int | None = None) -> str | None:
        """Why the gateway may not connect to ``ip`` (at ``port``, when given: the gateway's own
        sockets are checked then), or None when it may."""
        reason = self._fixed_refusal(ip)
        if reason:
            return reason
        embedded = embedded_ipv4(ip)
        for inner in embedded:
            reason = self._fixed_refusal(inner)
            if reason:
                return reason
        if port is not None and any(self._is_own(a, port) for a in (ip, *embedded)):
            return "the gateway's own address is not allowed (it would proxy to itself)"
        if self._allowed and not any(
                a in net for a in (ip, *embedded) for net in self._allowed
                if a.version == net.version):
            return "address is outside the allowed networks"
        return None

    @staticmethod
    def _fixed_refusal(ip: IPAddress) -> str | None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            return "scoped IPv6 addresses are not allowed"
        if ip in METADATA_ADDRESSES:
            return "cloud metadata addresses are not allowed"
        if ip.is_link_local:
            return "link-local addresses are not allowed"
        if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
            return "unspecified addresses are not allowed"
        if ip.is_multicast:
            return "multicast addresses are not allowed"
        if ip == _BROADCAST:
            return "broadcast address is not allowed"
        return None

    def check_url(self, url: str) -> str:
        """The URL to store for an engine-reported ``url`` (no trailing slash: the proxy appends
        ``/api/v1/...``); raises :class:`URLRefused` when it is malformed or refused."""
        normalised, _scheme, host, port = split_url(url)
        if host in METADATA_HOSTNAMES or host.endswith(_METADATA_SUFFIXES):
            raise URLRefused("cloud metadata hosts are not allowed")
        address = literal_address(host)
        if address is None:
            if self._allowed:
                raise URLRefused(
                    "url host must be an IP address inside the allowed networks "
                    "(FLOWORK_ENGINE_NETWORKS is set, so host names are not accepted)")
            if host == "localhost" or host.endswith(".localhost"):
                # Always loopback (RFC 6761): catch a loop back to the gateway here already.
                for loopback in (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")):
                    if self._is_own(loopback, port):
                        raise URLRefused("the gateway's own address is not allowed "
                                         "(it would proxy to itself)")
            return normalised
        reason = self.refusal(address, port)
        if reason:
            raise URLRefused(reason)
        return normalised


def split_url(url: str) -> tuple[str, str, str, int]:
    """(normalised URL, scheme, lowercase host without brackets or trailing dot, port) of a
    syntactically acceptable http(s) URL; :class:`URLRefused` otherwise. Checks syntax only."""
    if not isinstance(url, str) or not url:
        raise URLRefused("url must be a non-empty string")
    if len(url) > MAX_URL_LEN:
        raise URLRefused(f"url must be at most {MAX_URL_LEN} characters")
    if _CONTROL_OR_SPACE.search(url) or "\\" in url:
        raise URLRefused("url contains whitespace, control characters or backslashes")
    if not url.isascii():
        # IDNA would map e.g. fullwidth letters onto a refused name after our check;
        # engines with international names report the punycode (xn--) form.
        raise URLRefused("url must be ASCII (use punycode for international names)")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise URLRefused("url is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise URLRefused("url must use http or https")
    if "@" in parts.netloc:
        raise URLRefused("url must not contain credentials")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise URLRefused("url must not have a query or fragment")
    match = _NETLOC.match(parts.netloc)
    if match is None:
        raise URLRefused("url host is malformed")
    port_text = match["port"]
    if port_text is None:
        port = _DEFAULT_PORTS[scheme]
    elif port_text.isdigit() and len(port_text) <= 5 and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise URLRefused("url port must be a number from 1 to 65535")
    if match["v6"] is not None:
        try:
            address = ipaddress.IPv6Address(match["v6"])
        except ValueError:
            # IPvFuture ([v1.x]), zone ids and other bracketed non-addresses.
            raise URLRefused("url host in brackets must be an IPv6 address") from None
        return url.rstrip("/"), scheme, str(address), port
    host = match["host"].lower().removesuffix(".")
    if not host:
        raise URLRefused("url must name a host")
    if len(host) > 253:
        raise URLRefused("url host must be at most 253 characters")
    for label in host.split("."):
        if not label:
            raise URLRefused("url host has an empty label")
        if len(label) > 63:
            raise URLRefused("url host labels must be at most 63 characters")
        if not _LABEL.match(label):
            raise URLRefused("url host may contain only letters, digits, '-' and '_'")
    return url.rstrip("/"), scheme, host, port


_POLICIES: weakref.WeakKeyDictionary[object, AddressPolicy] = weakref.WeakKeyDictionary()
_POLICIES_LOCK = threading.Lock()


def for_gateway(gateway: object) -> AddressPolicy:
    """The one :class:`AddressPolicy` of ``gateway``, created (allowing any address the fixed
    rules accept) on first use; every user of the gateway's policy gets this same object."""
    with _POLICIES_LOCK:
        policy = _POLICIES.get(gateway)
        if policy is None:
            policy = _POLICIES[gateway] = AddressPolicy()
        return policy
