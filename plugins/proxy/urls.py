"""Where a proxied request goes on the engine: the engine's base URL, the path below /api/v1
re-encoded, and the request target as httpx would send it (without building an
``httpx.Request``, which costs about a fifth of a small proxied request)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from . import errors

_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"
_QUERY_SAFE = _SEGMENT_SAFE + "/?%"


def engine_path(path: str) -> str:
    """``path`` (decoded, below /api/v1) re-encoded segment by segment.

    Dot segments are refused (also once backslashes are read as slashes), so nothing can
    climb out of /api/v1 on the engine; an encoded slash arrives decoded and stays a
    separator, and every ``%`` is re-encoded, so nothing is decoded twice.
    """
    segments = path.split("/")
    for segment in segments:
        if "\x00" in segment or any(p in (".", "..") for p in segment.replace("\\", "/").split("/")):
            raise errors.no_such_path()
    return "/".join(quote(s, safe=_SEGMENT_SAFE) for s in segments)


def engine_query(query: str) -> str:
    """The client's raw query string as it goes to the engine (re-quoted, ``%`` kept)."""
    return quote(query.encode("latin-1", "replace"), safe=_QUERY_SAFE)


@functools.lru_cache(maxsize=4096)
def engine_base(url: str) -> str | None:
    """``scheme://host[:port][/prefix]`` of an engine URL, or None if it is not usable."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    del port
    return f"{parts.scheme}://{parts.netloc}{quote(parts.path.rstrip('/'), safe='/%')}"


@dataclass(frozen=True)
class Origin:
    """An engine base parsed once (as httpx would parse it), for building requests without
    ``httpx.Request``."""

    address: tuple[bytes, bytes, int | None]  # scheme, host, port
    host_header: bytes
    prefix: str  # the base's path, already encoded


@functools.lru_cache(maxsize=4096)
def parse_origin(base: str) -> Origin:
    url = httpx.URL(base)
    return Origin((url.raw_scheme, url.raw_host, url.port), url.netloc,
                  url.raw_path.decode("ascii").rstrip("/"))


@functools.lru_cache(maxsize=4096)
def safe_origin(base: str) -> Origin | None:
    """The parsed origin, or None for a URL httpx refuses (an empty or over-long host label,
    a malformed IPv6 literal...)."""
    try:
        origin = parse_origin(base)
        host = origin.address[1].decode("ascii")
        if not host.startswith("[") and not host.replace(".", "").isdigit():
            host.encode("idna")  # what the resolver will do: empty or over-long labels fail
    except (httpx.InvalidURL, ValueError, UnicodeError):
        return None
    return origin


def request_target(origin: Origin, base: str, rest: str) -> bytes:
    """The request target for ``base + rest``, as httpx would send it. httpx escapes a ``%``
    that starts no ``%XX``; only text with a ``%`` can need that, so only it is parsed."""
    if "%" in rest or "%" in origin.prefix:
        return httpx.URL(base + rest).raw_path
    return (origin.prefix + rest).encode("ascii")


def query_string(req: Any) -> str:
    """The client's raw query string (WSGI environ or ASGI scope)."""
    env = getattr(req, "env", None)
    if env is not None:
        return env.get("QUERY_STRING", "")
    return req.scope.get("query_string", b"").decode("latin-1")
