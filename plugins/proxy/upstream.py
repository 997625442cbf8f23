"""The proxy's async HTTP/1.1 client to engines (the ASGI server's upstream side).

One file behind a small interface, so that swapping the client is one file. The caller
(forward.py) owns the breaker, retries, header hygiene and caching; this owns connections,
timeouts and the address guard.

(Implementation in progress: the interface below is final.)
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from gateway_kernel.netpolicy import AddressPolicy


@dataclass(frozen=True)
class Timeouts:
    connect_s: float  # TCP/TLS connect
    read_s: float  # longest silence while reading or writing
    headers_s: float  # from the end of the request body to the response headers
    max_duration_s: float  # the whole exchange, transfers included


class UpstreamError(Exception):
    """Base of the client's errors; the message is safe to log (no secrets, no query)."""


class UpstreamConnectError(UpstreamError):
    """Refused, DNS failure, or an address the policy refuses (502 engine_unreachable)."""


class UpstreamTimeout(UpstreamError):
    """A connect, headers, read or overall deadline passed (504 engine_timeout)."""


class UpstreamProtocolError(UpstreamError):
    """A malformed answer, or the connection reset or closed mid-way (502)."""


class UpstreamResponse:
    """Status and headers of an engine's answer; iterate it for the body as it arrives."""

    status: int
    headers: list[tuple[str, str]]  # as received; hop-by-hop headers NOT removed here

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the connection: back to the pool after a complete body, else discarded."""
        raise NotImplementedError


class UpstreamClient:
    """Pooled keep-alive HTTP/1.1 connections per origin, at most ``max_connections`` in all."""

    def __init__(self, *, max_connections: int, address_policy: AddressPolicy | None) -> None:
        self.max_connections = max_connections
        self.address_policy = address_policy

    async def request(self, method: str, url: str, headers: list[tuple[str, str]],
                      body: bytes | AsyncIterable[bytes] | None, *, timeouts: Timeouts,
                      guard: bool) -> UpstreamResponse:
        """Send one request and return once the response headers are in.

        ``guard``: resolve the host, refuse (UpstreamConnectError) if the policy refuses any
        address, then connect to the address that was checked. Never follows redirects, keeps
        no cookies, ignores environment proxies. A streamed ``body`` is sent as it arrives
        (chunked unless ``headers`` has Content-Length). ``headers`` are sent as given; Host
        is added from the URL when absent."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close every pooled connection."""
        raise NotImplementedError
