"""What a plugin hands the kernel: routes, sinks, auth schemes, principals, commands.

A plugin is a class registered as an entry point in the ``flowork_gateway.plugins`` group.
It subclasses :class:`GatewayPlugin` (name, version, requirements, settings) and implements
hooks from :mod:`gateway_kernel.hookspecs` (or another plugin's ``hookspecs`` module) with the
``@hookimpl`` decorator.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import pluggy

from .config import Setting

if TYPE_CHECKING:
    import falcon

    from .accounts import Account
    from .app import Gateway

PROJECT = "flowork_gateway"
hookimpl = pluggy.HookimplMarker(PROJECT)

PRINCIPAL_KINDS: tuple[str, ...] = ("public", "user", "engine", "service")

#: Where every route and sink path is served below (``Route("/hello")`` → ``/api/v1/hello``).
API_PREFIX = "/api/v1"
#: The name the kernel files its own routes, tables, migrations and settings under (and its
#: built-in plugin, ``gateway_kernel.system``); no plugin may take it.
KERNEL = "kernel"


class GatewayPlugin:
    """Base class of every plugin. Subclasses set the class attributes below."""

    #: Unique name; also the entry-point name and the migration-history key.
    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    #: Names of plugins that must be enabled too (checked at start-up).
    requires: ClassVar[tuple[str, ...]] = ()
    #: Settings this plugin reads; resolved and validated before ``gateway_configure``.
    settings: ClassVar[tuple[Setting, ...]] = ()
    #: One-line description for ``flowork-gateway plugins``.
    description: ClassVar[str] = ""
    #: The module specifying the hooks this plugin calls (pytest's ``pytest_addhooks``). None:
    #: ``<plugin package>.hookspecs`` if that module exists. Added before any plugin registers.
    hookspecs: ClassVar[ModuleType | None] = None


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``kind`` is one of user, engine, service.

    ``account`` is set for users; ``engine_id`` for engines. ``claims`` holds scheme-specific
    facts (for instance when the credential was issued).
    """

    kind: str
    scheme: str
    account: Account | None = None
    engine_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    #: Set when this principal's credential was exposed to a third party (see the hook
    #: ``gateway_credential_exposed``): it may then only be presented to that audience
    #: again. Routes refuse such a principal; a sink checks its own target against it.
    audience: str | None = None

    @property
    def account_id(self) -> int | None:
        return self.account.id if self.account is not None else None


class AuthScheme:
    """Produces principals of one ``kind`` from request headers.

    ``authenticate`` returns a Principal, returns None when its credential is absent, and
    raises a 401 :class:`~gateway_kernel.errors.GatewayError` when its credential is present
    but wrong (the kernel then stops: no other scheme gets a chance). ``missing`` is the error
    answered when a route needs this kind and no scheme found a credential.
    """

    name: str = ""
    kind: str = ""
    #: Request headers this scheme reads (advertised to CORS; a proxy never passes them to a
    #: party they are not meant for).
    headers: tuple[str, ...] = ()
    #: Error codes this scheme answers, by status (401: missing or wrong credential), listed
    #: on every OpenAPI operation that needs this scheme's kind.
    error_codes: Mapping[int, tuple[str, ...]] = {}

    def secrets(self) -> tuple[bytes, ...]:
        """Credential values this scheme holds that must never leave the gateway (a shared
        service secret, say): the proxy drops any outgoing header that carries one."""
        return ()

    def openapi_security_schemes(self) -> dict[str, dict[str, Any]]:
        """This scheme's ``components.securitySchemes`` entries. An operation needing this
        scheme's kind requires all of them together (:meth:`openapi_requirement`); several
        schemes of one kind are alternatives. Default: one ``apiKey`` entry per header."""
        return {f"{self.name}.{header}": {"type": "apiKey", "in": "header", "name": header}
                for header in self.headers}

    def openapi_requirement(self) -> dict[str, list[str]]:
        """The OpenAPI security requirement object this scheme satisfies."""
        return {name: [] for name in self.openapi_security_schemes()}

    def authenticate(self, req: falcon.Request) -> Principal | None:
        raise NotImplementedError

    def missing(self) -> Exception:
        raise NotImplementedError

    def exposed(self, principal: Principal) -> Exception:
        """The error for a credential used outside the audience it was exposed to."""
        from .errors import unauthorized

        return unauthorized("This credential was exposed to a third party and is no longer "
                            "accepted here; sign in again", code="credential_exposed")


Auth = str | Mapping[str, str]


@dataclass
class Route:
    """A Falcon resource at ``path`` (relative to the API prefix, a Falcon URI template).

    ``auth`` is the principal kind every method needs, or a mapping method → kind with an
    optional ``"*"`` default. One resource object may serve several routes.

    Responders (``on_get`` …) are synchronous; under the ASGI server they run in the kernel's
    pool. A resource may add ``async def on_<method>_async(req, resp, **params)``, awaited on
    the event loop instead under the ASGI server (after authentication in the pool, the body
    unread): for responders that wait on the network, like the public proxies.
    """

    path: str
    resource: object
    auth: Auth
    #: False: ``path`` is absolute, not under the API prefix (the kernel's ``/metrics``).
    prefixed: bool = True

    @property
    def full_path(self) -> str:
        return API_PREFIX + self.path if self.prefixed else self.path

    def auth_for(self, method: str) -> str:
        if isinstance(self.auth, str):
            return self.auth
        return self.auth.get(method, self.auth.get("*", "user"))


@dataclass
class Sink:
    """A catch-all below ``prefix`` (relative to the API prefix) for paths no route owns.

    ``handler(req, resp, path)`` gets the path below the API prefix; it is synchronous and
    runs in a worker thread (under the ASGI server: in the kernel's pool, the request body
    read beforehand, a synchronous ``resp.stream`` iterated in the pool).

    ``async_handler(req, resp, path)`` (optional) is used instead under the ASGI server: the
    kernel authenticates in its pool, then awaits it on the event loop with a
    ``falcon.asgi.Request``/``Response``. It streams the request body from ``req.stream``
    (nothing was read) and may set ``resp.stream`` to an async iterator. Blocking work
    (database, hooks) goes through ``await gateway.run_sync(fn, ...)``.
    """

    prefix: str
    handler: Callable[[falcon.Request, falcon.Response, str], None]
    auth: str = "user"
    async_handler: Callable[[Any, Any, str], Awaitable[None]] | None = None
    #: With ``async_handler``: synchronous work (database, hooks) run in the pool in the same
    #: hop as authentication, before ``async_handler``; its result is ``req.context.prepared``.
    prepare: Callable[[Any, str], Any] | None = None


@dataclass
class Command:
    """A CLI sub-command a plugin adds: ``flowork-gateway <name> …``.

    ``run(gateway, args)`` returns the process exit code. ``needs_database`` commands get a
    migrated database. A command with ``needs_config=False`` (a client, a key tool) runs with
    ``gateway=None``: it works even when the gateway's settings are broken, and starts fast.
    ``environment`` lists the ``FLOWORK_*`` variables it reads that are not settings, so
    that they are not reported as unknown settings.

    Publish commands in the ``flowork_gateway.commands`` entry-point group (name: the
    plugin's name, value: a list of Commands in a module that imports nothing heavy) so that
    ``flowork-gateway --help`` lists them without loading plugins or settings. Commands from
    the ``gateway_commands`` hook work too, once the configuration loads.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Gateway, argparse.Namespace], int]
    needs_database: bool = True
    needs_config: bool = True
    environment: tuple[str, ...] = ()
