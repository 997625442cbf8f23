"""The gateway's routes and sinks: who owns which path, checked once at start-up.

A path template has one owner (a second plugin registering it is refused, naming both); a
route's path in another spelling (trailing slashes, an encoded slash inside a path field)
never reaches a sink (API.md: a path a plugin owns is never proxied).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .api import API_PREFIX, PRINCIPAL_KINDS, Route, Sink
from .auth import RouteAuth
from .errors import GatewayError
from .loader import PluginError
from .observe import sink_route

if TYPE_CHECKING:
    import falcon

    from .app import Gateway

_FIELD = re.compile(r"\{[^}]*\}")


def check_path(plugin: str, what: str, path: object) -> None:
    """A route path or sink prefix starts with ``/`` (it is appended to the API prefix)."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise PluginError(
            f"plugin {plugin!r}: {what} path {path!r} must start with '/' (paths are relative "
            f"to {API_PREFIX}; without the slash it would be served at {API_PREFIX}{path})"
        )


def sink_pattern(prefix: str) -> re.Pattern[str]:
    """The path pattern of a sink below ``prefix`` (the full path, API prefix included)."""
    return re.compile("^" + re.escape(prefix) + r"(?P<path>/.*)?$")


def raw_path(req: Any) -> str | None:
    """The request target's path as the client sent it (still percent-encoded), if the
    server tells: RAW_URI (gunicorn, Falcon's test client), REQUEST_URI (waitress), or an
    ASGI scope's raw_path."""
    env = getattr(req, "env", None)
    raw: str | bytes | None = None
    if env is not None:
        raw = env.get("RAW_URI") or env.get("REQUEST_URI")
    else:
        scope = getattr(req, "scope", None)
        raw = scope.get("raw_path") if scope is not None else None
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    if "://" in raw:  # absolute-form request target
        raw = urlsplit(raw).path
    return raw.split("?", 1)[0]


class RouteTable:
    """Every route and sink of one gateway with its owner, and the route auth table."""

    def __init__(self, schemes: Mapping[str, Any]) -> None:
        self.schemes = schemes
        self.routes: list[tuple[str, Route]] = []
        self.sinks: list[tuple[str, Sink]] = []
        self.auth = RouteAuth()
        self._shapes: dict[str, str] = {}
        #: Route shapes by segment count (None: a path field), for owns_path.
        self._owned_shapes: dict[int, list[tuple[str | None, ...]]] = {}

    def add_route(self, plugin: str, route: Route) -> None:
        check_path(plugin, "route", route.path)
        shape = _FIELD.sub("{}", route.path.rstrip("/") or "/")
        owner = self._shapes.get(shape)
        if owner is not None:
            raise PluginError(
                f"route clash: {API_PREFIX}{route.path} is registered by both plugin "
                f"{owner!r} and plugin {plugin!r}"
            )
        kinds = {route.auth} if isinstance(route.auth, str) else set(route.auth.values())
        for kind in kinds:
            if kind not in PRINCIPAL_KINDS:
                raise PluginError(f"plugin {plugin!r}: route {route.path} has unknown auth {kind!r}")
            if kind != "public" and kind not in self.schemes:
                raise PluginError(
                    f"plugin {plugin!r}: route {route.path} needs {kind!r} principals but no "
                    f"enabled plugin supplies a {kind!r} auth scheme"
                )
        self._shapes[shape] = plugin
        segments = tuple(None if _FIELD.fullmatch(s) else s for s in shape.strip("/").split("/"))
        self._owned_shapes.setdefault(len(segments), []).append(segments)
        self.routes.append((plugin, route))
        self.auth.add(route, plugin)

    def add_sink(self, plugin: str, sink: Sink) -> None:
        check_path(plugin, "sink", sink.prefix)
        if sink.auth != "public" and sink.auth not in self.schemes:
            raise PluginError(
                f"plugin {plugin!r}: sink {sink.prefix} needs {sink.auth!r} principals but no "
                f"enabled plugin supplies that auth scheme"
            )
        self.sinks.append((plugin, sink))

    def owns_path(self, req: Any) -> bool:
        """True if the path is a route's path spelled another way: with trailing slashes, or
        with an encoded slash (``%2F``) inside what the route takes as one path field."""
        path = req.path
        if not path.startswith(API_PREFIX):
            return False
        if self._matches_route(path[len(API_PREFIX):].rstrip("/").split("/")[1:]):
            return True
        raw = raw_path(req)
        if raw is None or "%2f" not in raw.lower():
            return False
        # Split where the client put slashes, then decode each segment (%2F stays inside).
        raw = raw.rstrip("/")
        if not raw.startswith(API_PREFIX + "/"):
            return False
        return self._matches_route(
            [unquote(s) for s in raw[len(API_PREFIX):].split("/")[1:]])

    def enter_sink(self, gateway: Gateway, req: Any, resp: Any, auth: str, owner: str,
                   route: str) -> None:
        """What every sink request passes first (see :meth:`Gateway.enter_sink`)."""
        req.context.route = route
        if self.owns_path(req):
            raise GatewayError(404, "not_found", "Not found")
        gateway.authenticate(req, auth, sink=True)
        gateway.admit(req, resp, owner)

    def _matches_route(self, segments: list[str]) -> bool:
        for shape in self._owned_shapes.get(len(segments), ()):
            if all(seg == want if want is not None else seg != ""
                   for seg, want in zip(segments, shape, strict=True)):
                return True
        return False


def wsgi_sink_responder(gateway: Gateway, plugin: str, sink: Sink) -> Callable[..., None]:
    """The Falcon (WSGI) sink responder of ``sink``: enter it, then its handler."""
    route = sink_route((API_PREFIX + sink.prefix).rstrip("/"))
    base = sink.prefix.rstrip("/")

    def responder(req: falcon.Request, resp: falcon.Response, path: str | None = None) -> None:
        gateway.enter_sink(req, resp, sink.auth, plugin, route)
        sink.handler(req, resp, (base + (path or "")) or "/")

    return responder
