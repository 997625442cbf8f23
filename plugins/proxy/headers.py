"""Header hygiene both ways (API.md, "Proxy": removed, kept and added headers).

Which request headers are credentials comes from the enabled auth schemes
(``AuthScheme.headers`` and ``AuthScheme.secrets``), never from names written here: the proxy
knows its own headers only.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import errors
from .hookspecs import EngineTarget

if TYPE_CHECKING:
    from gateway_kernel import Gateway, Principal

log = logging.getLogger("gateway_plugins.proxy")

#: What the gateway adds to ``Via`` (RFC 9110 §7.6.3).
VIA = "1.1 flowork-gateway"
#: Who we are in ``Via`` (RFC 9110 §7.6.3 pseudonym): shared by every instance, so a loop
#: through a load balancer in front of several instances is caught too.
VIA_NAME = "flowork-gateway"

# RFC 9110 §7.6.1 plus the pre-standard ones still seen in the wild.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})
# Never forwarded: the gateway's own business (identity it asserts; the credentials of its
# auth schemes are dropped by HeaderPolicy.credential_headers / foreign_credential_headers).
_REQUEST_DROP = HOP_BY_HOP | {
    "host", "cookie", "x-flowork-user-id", "x-flowork-engine-id",
    "x-request-id", "content-length", "expect",
}
_CLIENT_ADDRESS = frozenset({"forwarded", "x-real-ip"})  # and every x-forwarded-*
# Never passed back: the gateway sets its own CORS and request id, and engines may not plant
# cookies on the gateway's origin (cookies are never forwarded to them either).
_RESPONSE_DROP = HOP_BY_HOP | {"set-cookie", "x-request-id", "content-length", "content-type"}
#: Statuses whose answer has no body.
BODILESS = frozenset({204, 304})

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")  # what h11 accepts: no control characters
_SECRET_SPLIT = re.compile(r"[\s,;=:]+")


class HeaderPolicy:
    """The request headers one gateway sends to engines: the client's, minus hop-by-hop,
    client-address (unless from a trusted proxy) and credential headers, plus the gateway's
    own; never one carrying a secret of an auth scheme."""

    def __init__(self, gateway: Gateway, trusted_proxies: tuple[Any, ...]) -> None:
        self.gateway = gateway
        self.trusted_proxies = trusted_proxies

    @functools.cached_property
    def credential_headers(self) -> frozenset[str]:
        """Headers of every auth scheme: a public proxy forwards no credentials at all.
        (Schemes are collected after ``gateway_configure``, hence lazily.)"""
        return frozenset(h.lower() for h in self.gateway.scheme_headers()) | {"authorization"}

    @functools.cached_property
    def foreign_credential_headers(self) -> frozenset[str]:
        """Headers of the schemes of other kinds than ``user``: a user's request to an engine
        carries the user's own credential (the engine checks it), never an engine's or a
        service's."""
        others = [kind for kind in self.gateway.schemes if kind != "user"]
        if not others:
            return frozenset()
        return frozenset(h.lower() for h in self.gateway.scheme_headers(*others))

    @functools.cached_property
    def secrets(self) -> tuple[bytes, ...]:
        """Secrets the enabled auth schemes hold (the service key): never sent to an engine.
        Read on first use: the schemes are collected after ``gateway_configure``."""
        return tuple(secret for schemes in self.gateway.schemes.values()
                     for scheme in schemes for secret in scheme.secrets() if secret)

    def _trusted(self, peer: str | None) -> bool:
        networks = self.trusted_proxies
        if not networks or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in networks)

    def request_headers(self, req: Any, principal: Principal | None,
                        target: EngineTarget, public: bool) -> dict[str, str]:
        """The headers to forward (lowercase names), per API.md's removed/kept/added lists."""
        received = client_headers(req)
        named = received.get("connection", "")
        connection = {t.strip().lower() for t in named.split(",")} if named else set()
        trusted = self._trusted(req.remote_addr)
        credentials = self.credential_headers if public else self.foreign_credential_headers
        headers: dict[str, str] = {}
        for name, value in received.items():
            if name in _REQUEST_DROP or name in connection:
                continue
            if not trusted and (name in _CLIENT_ADDRESS or name.startswith("x-forwarded-")):
                continue
            if name in credentials:
                continue
            if _TOKEN.match(name) and _VALUE.match(value):
                headers[name] = value

        peer = req.remote_addr or ""
        chain = headers.get("x-forwarded-for")  # present only from a trusted proxy
        headers["x-forwarded-for"] = f"{chain}, {peer}" if chain else peer
        headers.setdefault("x-forwarded-proto", req.scheme)
        headers.setdefault("x-forwarded-host", received.get("host") or req.host)
        via = headers.get("via")
        headers["via"] = f"{via}, {VIA}" if via else VIA
        headers["x-request-id"] = req.context.request_id
        if not public:
            headers["x-flowork-engine-id"] = target.engine_id
            if principal is not None and principal.account is not None:
                headers["x-flowork-user-id"] = principal.account.public_address
        return headers

    def carries_secret(self, name: str, value: str) -> bool:
        """True if a header (say, added by a hook) carries a secret of an auth scheme."""
        found = False
        for secret in self.secrets:
            if len(value) < len(secret):  # too short to carry it
                continue
            found |= hmac.compare_digest(encode(value), secret)
            for token in _SECRET_SPLIT.split(value):
                found |= hmac.compare_digest(encode(token), secret)
        if found:
            log.warning("dropped header %s from a proxied request: it carried the gateway secret",
                        name)
        return found


def refuse_loop(req: Any) -> None:
    """508 ``proxy_loop`` when the request already passed through a Flowork gateway."""
    via = req.get_header("Via")
    if via and any(VIA_NAME in part.split()[1:2] for part in via.split(",")):
        raise errors.proxy_loop()


def client_headers(req: Any) -> Mapping[str, str]:
    """The client's request headers, lowercase names, from a WSGI environ or (ASGI) Falcon's
    own map of them (the scope's list may be a one-shot iterator)."""
    env = getattr(req, "env", None)
    headers: dict[str, str] = {}
    if env is not None:
        for key, value in env.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = value
            elif key == "CONTENT_TYPE" and value:
                headers["content-type"] = value
        return headers
    return req.headers


def is_chunked(req: Any) -> bool:
    """A body without Content-Length (only under ASGI: waitress hands the app a length)."""
    if getattr(req, "env", None) is not None:
        return False
    encoding = req.get_header("Transfer-Encoding")
    return bool(encoding) and "chunked" in encoding.lower()


def encode(value: str) -> bytes:
    """A header value as it goes on the wire (latin-1 when it can be)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def response_headers(raw: Any) -> tuple[list[tuple[str, str]], str | None]:
    """The engine's headers (name, value pairs as received) minus hop-by-hop ones (and those
    ``Connection`` names), lowercase names, with Content-Length split out."""
    pairs = [(n.lower(), v) for n, v in raw]
    connection = {t.strip().lower() for n, v in pairs if n == "connection" for t in v.split(",")}
    kept: list[tuple[str, str]] = []
    content_length = None
    for name, value in pairs:
        if name == "content-length":
            content_length = value.strip() if value.strip().isdigit() else None
        elif name == "content-type":
            kept.append((name, value))
        elif (name not in _RESPONSE_DROP and name not in connection
              and not name.startswith("access-control-")):
            kept.append((name, value))
    return kept, content_length


def apply_response(resp: Any, status: int, headers: Any) -> None:
    """The engine's status and kept headers onto the gateway's response, plus ``Via``."""
    resp.status = status
    content_type = None
    for name, value in headers:
        if name == "content-type":
            content_type = value
        else:
            resp.append_header(name, value)
    if content_type is not None:
        resp.content_type = content_type
    elif status >= 200 and status not in BODILESS:
        # Without this Falcon would label the engine's bytes with its default, JSON.
        resp.content_type = "application/octet-stream"
    resp.append_header("Via", VIA)
