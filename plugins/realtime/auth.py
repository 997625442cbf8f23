"""Socket sign-ins through the kernel's own auth dispatch (no signature or token code here).

A connect's credentials become the headers of a synthetic Falcon request, which
``gateway.authenticate`` checks exactly as it checks a REST request: same schemes, same
freshness, logout, auto-registration and throttling rules. The request is marked as a socket
sign-in, so the user scheme also accepts the ``flowork_socket_auth|…`` message. Which headers
carry a kind's credential is the enabled schemes' business (``AuthScheme.headers``), read
through ``gateway.scheme_headers(kind)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import falcon
import falcon.testing

from gateway_kernel import Principal
from gateway_kernel.http import MAX_JSON_DEPTH, too_deep

if TYPE_CHECKING:
    from gateway_kernel import Gateway

    from .server import Realtime

_MAX_HEADER = 8192


def missing_credential(gateway: Gateway, kind: str) -> Exception:
    """What the kernel answers when no credential of ``kind`` was sent (the first scheme's
    ``missing()``, as for a REST request)."""
    return gateway.schemes[kind][0].missing()


def client_address(environ: Mapping[str, Any]) -> str:
    """The peer's address (Engine.IO's ASGI environ says 127.0.0.1 whoever connects; the
    ASGI scope knows), so per-address throttling of failed sign-ins sees the real client."""
    client = (environ.get("asgi.scope") or {}).get("client")
    if client:
        return str(client[0])
    return str(environ.get("REMOTE_ADDR") or "127.0.0.1")


def sign_in_request(headers: Mapping[str, str], environ: Mapping[str, Any]) -> falcon.Request:
    headers = dict(headers)
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if isinstance(forwarded, str):  # trusted or not is the kernel's decision, as for REST
        headers["X-Forwarded-For"] = forwarded
    env = falcon.testing.create_environ(path="/socket.io/", headers=headers,
                                        remote_addr=client_address(environ))
    req = falcon.Request(env)
    req.context.socket_sign_in = True
    return req


async def authenticate(rt: Realtime, headers: Mapping[str, str], environ: Mapping[str, Any],
                       kind: str) -> Principal:
    """The principal of ``kind`` for these headers; raises the kernel's GatewayError."""
    req = sign_in_request(headers, environ)
    return await rt.run_sync(_sign_in, rt.gateway, req, kind)


def _sign_in(gateway: Any, req: falcon.Request, kind: str) -> Principal:
    principal = gateway.authenticate(req, kind)
    # Admission hooks (rate limits) see a socket sign-in as a request of group "realtime".
    admit = getattr(gateway, "admit", None)
    if admit is not None:
        admit(req, falcon.Response(), "realtime")
    return principal


def user_headers(auth: Any, environ: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """The GUI's sign-in headers ``names`` (the user schemes' headers): connect
    ``auth.headers``, a flat ``auth`` dict, or the handshake's HTTP headers, in that order
    (names case-insensitive)."""
    source: Any = None
    if isinstance(auth, dict):
        nested = auth.get("headers")
        source = nested if isinstance(nested, dict) else auth
    found: dict[str, str] = {}
    if isinstance(source, dict):
        lowered = {str(k).lower(): v for k, v in source.items()}
        for name in names:
            value = lowered.get(name.lower())
            if isinstance(value, (str, int)) and len(str(value)) <= _MAX_HEADER:
                found[name] = str(value)
    if not found:
        for name in names:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            if isinstance(value, str):
                found[name] = value
    return found


class SafeJSON:
    """The json module for Socket.IO packets, refusing nesting deeper than the REST limit
    before parsing (json's C parser recurses per level; see gateway_kernel.http)."""

    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(s: str | bytes, *args: Any, **kwargs: Any) -> Any:
        raw = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
        if too_deep(raw):
            raise ValueError(f"payload nests deeper than {MAX_JSON_DEPTH} levels")
        return json.loads(s, *args, **kwargs)
