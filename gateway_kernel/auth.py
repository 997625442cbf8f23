"""Auth dispatch: the enabled schemes by principal kind, authentication of a request, the
audience check of exposed credentials, admission, and the route auth table.

Routes name a principal kind, never a scheme (docs/writing-plugins.md §5); the kernel runs
the enabled schemes of that kind in order (``FLOWORK_AUTH_SCHEMES``, else plugin order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import falcon

from .api import PRINCIPAL_KINDS, AuthScheme, Principal, Route
from .config import ConfigError
from .loader import PluginError
from .throttle import client_address, log_auth_failure

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("gateway_kernel")


def collect_schemes(found: Iterable[AuthScheme], order: Sequence[str]) -> dict[str, list[AuthScheme]]:
    """The schemes by principal kind, in ``order`` (scheme names: ``FLOWORK_AUTH_SCHEMES``)
    first, the rest in plugin load order."""
    found = list(found)
    names = [s.name for s in found]
    unknown = [n for n in order if n not in names]
    if unknown:
        raise ConfigError(
            f"FLOWORK_AUTH_SCHEMES names unknown scheme(s) {unknown}; available: {names}"
        )
    if order:
        found.sort(key=lambda s: order.index(s.name) if s.name in order else len(order))
    by_kind: dict[str, list[AuthScheme]] = {}
    for scheme in found:
        if scheme.kind not in PRINCIPAL_KINDS or scheme.kind == "public":
            raise PluginError(f"auth scheme {scheme.name!r} has invalid kind {scheme.kind!r}")
        by_kind.setdefault(scheme.kind, []).append(scheme)
    return by_kind


def authenticate(gateway: Gateway, req: falcon.Request, kind: str, sink: bool) -> Principal | None:
    """The principal of ``kind`` for this request, or a 401/429/503 error (see
    :meth:`Gateway.authenticate`)."""
    if kind == "public":
        return None
    throttle = gateway.auth_throttle
    client = client_address(req, gateway.trusted_proxies)
    if throttle is not None:
        throttle.check(client)  # 429 before any credential is looked at
    schemes = gateway.schemes[kind]
    for scheme in schemes:
        try:
            principal = scheme.authenticate(req)
            if principal is not None and principal.audience is not None and not sink:
                raise scheme.exposed(principal)
        except falcon.HTTPError as exc:
            # A credential was presented and refused: log it, count it for the throttle.
            if exc.status_code == 401:
                code = getattr(exc, "code", "unauthorized")
                log_auth_failure(scheme.name, code, client, req.path)
                gateway.metrics.auth_failures.labels(scheme.name, code).inc()
                if throttle is not None:
                    throttle.failed(client)
            raise
        if principal is not None:
            if gateway._authorize is not None:
                gateway._authorize(gateway=gateway, principal=principal, req=req)
            req.context.principal = principal
            return principal
    raise schemes[0].missing()


def scheme_headers(schemes: dict[str, list[AuthScheme]], kinds: Sequence[str]) -> tuple[str, ...]:
    """The headers of the schemes of ``kinds`` (all kinds when empty), in order, each once."""
    return tuple(dict.fromkeys(
        header for kind, of_kind in schemes.items() if not kinds or kind in kinds
        for scheme in of_kind for header in scheme.headers))


def check_audience(schemes: dict[str, list[AuthScheme]], principal: Principal, audience: str) -> None:
    """Refuse ``principal`` if its credential is restricted to another audience."""
    if principal.audience is not None and principal.audience != audience:
        scheme = next(s for s in schemes[principal.kind] if s.name == principal.scheme)
        raise scheme.exposed(principal)


def veto_caller(gateway: Gateway) -> Any:
    """The ``gateway_authorize`` caller, or None when no plugin vetoes (it runs on every
    authenticated request: skip pluggy then)."""
    caller = gateway.hook.gateway_authorize
    return caller if caller.get_hookimpls() else None


def admission_caller(gateway: Gateway) -> Any:
    """The gateway_admit caller, without plugins that said (in gateway_configure, with
    ``admits_nothing = True``) that they admit everything under their settings; None when
    nobody is left, so requests skip the hook (and health stays on the event loop)."""
    idle = [p for p in gateway.plugins.values() if getattr(p, "admits_nothing", False)]
    caller = (gateway.pm.subset_hook_caller("gateway_admit", remove_plugins=idle) if idle
              else gateway.hook.gateway_admit)
    return caller if caller.get_hookimpls() else None


class RouteAuth:
    """The principal kind and owner of every routed method, keyed by the route's URI template
    (as Falcon reports it in ``req.uri_template``) and the method: filled once at start-up,
    one dictionary lookup per request. Nothing is stored on resource objects, so one
    resource may serve several routes."""

    __slots__ = ("_table",)

    def __init__(self) -> None:
        self._table: dict[tuple[str, str], tuple[str, str]] = {}

    def add(self, route: Route, owner: str) -> None:
        template = route.full_path
        for method in falcon.COMBINED_METHODS:
            if hasattr(route.resource, f"on_{method.lower()}"):
                self._table[(template, method)] = (route.auth_for(method), owner)

    def get(self, template: str | None, method: str) -> tuple[str, str] | None:
        """(principal kind, owning plugin) of ``method`` on the route ``template``; None
        when that route does not serve the method (Falcon answers 405)."""
        return self._table.get((template, method)) if template is not None else None
