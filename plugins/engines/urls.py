"""Validation of engine base URLs: those engines report in heartbeats, and static ones.

An engine-reported URL is where the proxy will send users' requests, so it is untrusted input
that steers the gateway's outbound connections (SSRF). Rules (API.md "Proxy"):

- http or https only, a host, no credentials, no query or fragment; at most 2048 chars.
- Refused everywhere: link-local (169.254.0.0/16, fe80::/10, including IPv4-mapped forms),
  cloud metadata addresses and names, unspecified, multicast and broadcast addresses.
  IPv4 hosts in the shorthand forms the C resolver accepts (``2852039166``, ``0xa9.0xfe.…``,
  ``169.254.43518``) are normalised first, so they cannot sneak a refused address past.
- ``FLOWORK_ENGINE_NETWORKS`` (allow-list) set: the host must be an IP literal inside one of
  the networks. Hostnames are then refused: a DNS name can point anywhere, and change its
  answer after we checked it (DNS rebinding), so with an allow-list only literals are
  provable. Without an allow-list, hostnames other than the known metadata names are accepted.

Loopback and private addresses are allowed by default (an engine on the gateway's own host or
LAN is the common self-hosted case); operators narrow that with the allow-list.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LEN = 2048

#: Cloud instance-metadata endpoints that are not already link-local.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle (link-local too)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
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
    }
)

_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
# What inet_aton would read as an IPv4 address: 1-4 dot-separated decimal/octal/hex numbers.
_INET_ATON_FORM = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")


class InvalidEngineURL(ValueError):
    """The URL is refused; the message says why (safe to show to the engine)."""


def _host_address(host: str) -> IPAddress | None:
    """The IP address ``host`` denotes literally, in any form a resolver would accept."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _INET_ATON_FORM.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise InvalidEngineURL("host is not a valid IPv4 address") from None
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _nat64(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 gateway would translate ``address`` to (RFC 6052)."""
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _refused_address(address: IPAddress) -> str | None:
    """Why ``address`` may never be an engine address, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour or _nat64(address)
        if mapped is not None:
            reason = _refused_address(mapped)
            if reason:
                return reason
        if address.scope_id:
            return "scoped IPv6 addresses are not allowed"
    if address in METADATA_ADDRESSES:
        return "cloud metadata addresses are not allowed"
    if address.is_link_local:
        return "link-local addresses are not allowed"
    if address.is_unspecified or address.is_multicast:
        return "unspecified and multicast addresses are not allowed"
    if isinstance(address, ipaddress.IPv4Address) and address == ipaddress.IPv4Address(
        "255.255.255.255"
    ):
        return "broadcast address is not allowed"
    return None


def _split(url: str) -> tuple[str, str]:
    """(normalised URL, lowercase host) for a syntactically acceptable http(s) URL."""
    if not isinstance(url, str) or not url:
        raise InvalidEngineURL("url must be a non-empty string")
    if len(url) > MAX_URL_LEN:
        raise InvalidEngineURL(f"url must be at most {MAX_URL_LEN} characters")
    if _CONTROL_OR_SPACE.search(url) or "\\" in url:
        raise InvalidEngineURL("url contains whitespace, control characters or backslashes")
    if not url.isascii():
        # IDNA would map e.g. fullwidth letters onto a refused name after our check;
        # engines with international names report the punycode (xn--) form.
        raise InvalidEngineURL("url must be ASCII (use punycode for international names)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidEngineURL("url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidEngineURL("url must use http or https")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise InvalidEngineURL("url must not contain credentials")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InvalidEngineURL("url must not have a query or fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidEngineURL("url must name a host")
    # Stored without a trailing slash: the proxy appends /api/v1/... to it.
    return url.rstrip("/"), host


def validate_engine_url(url: str, networks: Iterable[Network] = ()) -> str:
    """The URL to store for an engine-reported ``url``; :class:`InvalidEngineURL` if refused."""
    normalised, host = _split(url)
    if host in METADATA_HOSTNAMES or host.endswith(".metadata.google.internal"):
        raise InvalidEngineURL("cloud metadata hosts are not allowed")
    address = _host_address(host)
    if address is not None:
        reason = _refused_address(address)
        if reason:
            raise InvalidEngineURL(reason)
    allowed = tuple(networks)
    if allowed:
        if address is None:
            raise InvalidEngineURL(
                "url host must be an IP address inside the allowed networks "
                "(FLOWORK_ENGINE_NETWORKS is set, so host names are not accepted)"
            )
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            candidates.append(address.ipv4_mapped)
        if not any(a in net for a in candidates for net in allowed if a.version == net.version):
            raise InvalidEngineURL("url host is outside the allowed networks")
    return normalised


def parse_static_urls(mapping: Mapping[str, str]) -> dict[str, str]:
    """``FLOWORK_ENGINE_URLS`` checked: canonical engine UUID → URL (operator-trusted, so only
    syntax is checked, not the address rules). Raises ValueError naming the bad entry."""
    import uuid

    result: dict[str, str] = {}
    for key, url in mapping.items():
        try:
            engine_id = str(uuid.UUID(key))
        except ValueError:
            raise ValueError(f"{key!r} is not an engine id (UUID)") from None
        try:
            result[engine_id] = _split(url)[0]
        except InvalidEngineURL as exc:
            raise ValueError(f"URL for engine {engine_id}: {exc}") from None
    return result
