"""Small request/response helpers every plugin uses: bounded JSON bodies, ids, JSON answers."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from typing import Any

import falcon

from .errors import GatewayError, bad_request, not_found

#: The default of the kernel setting FLOWORK_MAX_BODY_BYTES (one definition, used by both).
DEFAULT_MAX_BODY = 1024 * 1024


def body_stream(req: falcon.Request) -> Any:
    """A blocking file-like view of the request body on either server (see read_body): under
    the ASGI server, the kernel's (the body read already, or read from the event loop as the
    synchronous code asks for it); under WSGI, ``req.bounded_stream``."""
    stream = getattr(req.context, "body_stream", None)
    if stream is not None:
        return stream
    prefetched = getattr(req.context, "prefetched_body", None)
    if prefetched is not None:
        return io.BytesIO(prefetched)
    return req.bounded_stream


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(413, "body_too_large", f"Request body exceeds {limit} bytes")


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes (declared or actually sent).

    Under the ASGI server the kernel has already read a route's body (bounded, after
    authentication) into ``req.context.prefetched_body``; otherwise it is read here."""
    length = req.content_length
    if length is not None and length > limit:
        raise body_too_large(limit)
    prefetched = getattr(req.context, "prefetched_body", None)
    if prefetched is not None:
        if len(prefetched) > limit:
            raise body_too_large(limit)
        return prefetched
    data = body_stream(req).read(limit + 1)
    if len(data) > limit:
        raise body_too_large(limit)
    return data


_MISSING = object()

#: Deepest JSON nesting accepted. json's C parser recurses once per level, and py_ecc (pulled
#: in by eth_account) raises the recursion limit to 100000, so ~100k nested brackets (a
#: 200 KB body) would overflow the C stack and kill the process instead of raising.
MAX_JSON_DEPTH = 512
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def _too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the usual case: no scan at all
        return False
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


#: Public name: Socket.IO payloads (the realtime plugin) are held to the same nesting limit.
too_deep = _too_deep


def read_json(req: falcon.Request, limit: int | None = None, default: Any = _MISSING) -> Any:
    """The JSON body, parsed; 400 ``invalid_body`` for bad JSON, 413 over ``limit``.

    ``limit`` defaults to the gateway's ``FLOWORK_MAX_BODY_BYTES``. An empty body gives
    ``default`` if one was passed, else 400.
    """
    if limit is None:
        limit = getattr(req.context, "max_body", DEFAULT_MAX_BODY)
    raw = read_body(req, limit)
    if not raw.strip():
        if default is not _MISSING:
            return default
        raise bad_request("Request body must be JSON")
    if _too_deep(raw):
        raise bad_request(f"Request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad_request("Request body is not valid JSON") from None


def read_json_object(req: falcon.Request, limit: int | None = None) -> dict[str, Any]:
    """The JSON body, which must be an object (an empty body counts as ``{}``)."""
    body = read_json(req, limit, default={})
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object")
    return body


def require_str(body: dict[str, Any], key: str, *, min_len: int = 1, max_len: int = 1000,
                strip: bool = True) -> str:
    """``body[key]`` as a string of bounded length, else 400 ``invalid_body``."""
    value = body.get(key)
    if not isinstance(value, str):
        raise bad_request(f"'{key}' is required and must be a string")
    if strip:
        value = value.strip()
    if not min_len <= len(value) <= max_len:
        raise bad_request(f"'{key}' must be {min_len} to {max_len} characters")
    return value


#: The one spelling of an id the gateway issues and accepts: lower-case hex, hyphenated.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_uuid(value: str) -> str:
    """``value`` if it is a UUID in canonical form, else 404 ``not_found`` (API.md).

    Other spellings (``urn:uuid:…``, ``{…}``, upper case, no hyphens) are refused rather than
    normalised, so one object has one id on the wire and in every cache or log keyed by it.
    """
    if not isinstance(value, str) or not _CANONICAL_UUID.fullmatch(value):
        raise not_found()
    return value


def isoformat(value: dt.datetime | None) -> str | None:
    """ISO-8601 with an explicit UTC offset, for naive-UTC datetimes from the database."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat().replace("+00:00", "Z")


def send_json(resp: falcon.Response, data: Any, status: int = 200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(data, separators=(",", ":")).encode()
