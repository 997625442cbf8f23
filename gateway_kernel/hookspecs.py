"""Every hook of the Flowork Gateway, in one file, grouped by lifecycle.

Plugins implement these with ``@gateway_kernel.hookimpl``. Unless a docstring says
*firstresult*, pluggy calls every implementation and returns the list of their non-None
results. A misspelt hook implementation (a ``gateway_*`` or ``flowork_*`` method marked
``@hookimpl`` that matches no spec here) fails at start-up (``pm.check_pending()``).

Hooks prefixed ``gateway_`` are called by the kernel. Hooks prefixed ``flowork_`` are the
contract between the bundled product plugins (engines, sharing, proxy, auth): the kernel never
calls them; they are specified here so that each side can be replaced without touching the
other. ``tests/test_hookspecs.py`` fails when a hook here is undocumented or never implemented.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from .api import PROJECT

if TYPE_CHECKING:
    import falcon
    import peewee

    from .accounts import Account
    from .api import AuthScheme, Command, Principal, Route, Sink
    from .app import Gateway
    from .db import Migration

hookspec = pluggy.HookspecMarker(PROJECT)


# --- lifecycle --------------------------------------------------------------------------------


@hookspec
def gateway_configure(gateway: Gateway) -> None:
    """Settings are resolved (``gateway.config``); prepare plugin state from them.

    Called once per gateway, in plugin load order, before models, routes and schemes are
    collected. Raise :class:`~gateway_kernel.config.ConfigError` for an invalid combination.
    """


@hookspec
def gateway_startup(gateway: Gateway) -> None:
    """The app is wired and the database migrated; start background work here."""


@hookspec
def gateway_shutdown(gateway: Gateway) -> None:
    """The gateway is closing: stop background work, close clients. Must not raise."""


# --- schema -------------------------------------------------------------------------------------


@hookspec
def gateway_models() -> list[type[peewee.Model]]:
    """The peewee models this plugin owns (subclasses of ``gateway_kernel.BaseModel``).

    Used for listings (``flowork-gateway plugins``) and by test fixtures; tables are created
    by migrations, not from this list.
    """


@hookspec
def gateway_migrations() -> list[Migration]:
    """This plugin's schema migrations, oldest first.

    Each is applied once, recorded under (plugin name, migration name) in the history table.
    Plugins are migrated in dependency order (a plugin after those it ``requires``).
    Never rename or drop a migration that has shipped; append a new one.
    """


# --- HTTP -------------------------------------------------------------------------------------


@hookspec
def gateway_routes(gateway: Gateway) -> list[Route]:
    """Routes this plugin owns. The kernel records the owner of every path template and
    refuses a second plugin registering the same one (naming both)."""


@hookspec
def gateway_sinks(gateway: Gateway) -> list[Sink]:
    """Catch-alls for paths that no route owns (the authenticated proxy is one)."""


@hookspec
def gateway_middleware(gateway: Gateway) -> list[object]:
    """Falcon middleware objects, added after the kernel's own (request id, CORS, auth)."""


@hookspec
def gateway_asgi_middleware(gateway: Gateway, app: Any) -> Any:
    """Wrap the gateway's ASGI application; return the wrapper (an ASGI 3 app) or None.

    Called once, when ``gateway.asgi`` is first built, in plugin load order: each call gets
    the previous result, so the last plugin's wrapper is outermost. A wrapper sees every
    scope (``lifespan``, ``http``, ``websocket``) and must pass what it does not handle to
    ``app`` (the lifespan always: it runs the gateway's startup and shutdown). This is how a
    plugin serves WebSocket on the REST port. Not called under ``serve --server waitress``.
    """


@hookspec
def gateway_cors_headers() -> list[str]:
    """Extra request header names browsers may send (beyond the auth schemes' own)."""


@hookspec
def gateway_openapi_common_errors(gateway: Gateway) -> dict[int, list[str]]:
    """Error codes by status that any operation may answer because of this plugin (a rate
    limiter's 429), added to every operation of the document."""


@hookspec
def gateway_openapi(gateway: Gateway) -> dict[str, Any]:
    """This plugin's part of the OpenAPI document: ``{"paths": {...}, "components": {...}}``.

    Paths are relative to the API prefix. The kernel merges every enabled plugin's part.
    """


# --- auth -------------------------------------------------------------------------------------


@hookspec
def gateway_auth_schemes(gateway: Gateway) -> list[AuthScheme]:
    """Auth schemes this plugin supplies. Order: ``FLOWORK_AUTH_SCHEMES`` if set, else plugin
    load order. Routes never name a scheme, only a principal kind."""


@hookspec
def gateway_authorize(gateway: Gateway, principal: Principal, req: falcon.Request) -> None:
    """Veto: called after a principal was established for a route. Raise a
    ``GatewayError`` to refuse the request; return None to let it pass."""


@hookspec
def gateway_admit(gateway: Gateway, req: falcon.Request, resp: falcon.Response,
                  principal: Principal | None, group: str) -> None:
    """Called for every request to a route or sink after authentication (``principal`` is
    None on public routes), before its responder; ``group`` is the name of the plugin that
    owns the route (``kernel`` for the kernel's own). Raise a ``GatewayError`` to refuse it
    (rate limits answer 429); may set response headers. Runs in a worker thread. A plugin
    that admits everything under its current settings sets ``admits_nothing = True`` on
    itself in ``gateway_configure``: the kernel then leaves it out of this hook."""


@hookspec
def gateway_credential_exposed(gateway: Gateway, principal: Principal, audience: str) -> None:
    """The credential that authenticated ``principal`` is about to be shown to ``audience``, a
    third party (the proxy forwards a user's signature headers to an engine the user does not
    own). The scheme that issued the principal restricts that credential to ``audience`` from
    now on, on every instance: later requests with it get a principal whose ``audience`` is set,
    which routes refuse (``AuthScheme.exposed``). Called before the credential leaves."""


# --- accounts ---------------------------------------------------------------------------------


@hookspec(firstresult=True)
def gateway_account_defaults(address: str) -> dict[str, Any] | None:
    """*firstresult*. Column values for a new account with canonical ``address``
    (``public_address``, ``username``, ``email``, ``tier``)."""


@hookspec(firstresult=True)
def gateway_resolve_account(gateway: Gateway, identifier: str) -> Account | None:
    """*firstresult*. Turn a user-supplied identifier (an address, say) into an account,
    creating it if the scheme allows; None if the identifier is not of this scheme's form.
    Raise a 400 ``GatewayError`` for a malformed one. The kernel falls back to username."""


@hookspec
def gateway_user_permissions(gateway: Gateway, account: Account) -> list[str]:
    """Permission names for ``account``; all implementations' lists are merged in order."""


# --- CLI --------------------------------------------------------------------------------------


@hookspec
def gateway_commands() -> list[Command]:
    """Extra ``flowork-gateway`` sub-commands (:class:`~gateway_kernel.api.Command`); a
    command's ``run(gateway, args)`` gets a migrated database unless it says
    ``needs_database=False``. Called only when the command line names a command the
    ``flowork_gateway.commands`` entry points do not provide, after the configuration loads:
    prefer the entry points, whose commands ``--help`` lists fast and even when the
    configuration is broken."""


# --- Flowork contract: engines, sharing, proxy ------------------------------------------------


class EngineIdentity(NamedTuple):
    """An engine as seen by the engine-token scheme."""

    engine_id: str
    owner_account_id: int


class EngineTarget(NamedTuple):
    """Where a proxied request goes: the engine and its base URL (``None`` when offline)."""

    engine_id: str
    url: str | None
    online: bool
    #: True when the URL came from operator configuration (trusted), not a heartbeat.
    static: bool = False
    #: True when the principal owns the engine. False (a guest's request) means the caller's
    #: credential is exposed to the engine's owner (``gateway_credential_exposed``).
    owned: bool = False


class EngineGuest(NamedTuple):
    """A user an engine is shared with, and the share's role."""

    account: Account
    role: str


@hookspec(firstresult=True)
def flowork_engine_by_token_digest(digest: str) -> EngineIdentity | None:
    """*firstresult*. The engine whose token has this hex SHA-256 digest, or None.
    Must be an indexed lookup (O(1) in the number of engines)."""


@hookspec
def flowork_engine_guests(engine_id: str) -> list[EngineGuest]:
    """Users, other than the owner, who may use ``engine_id`` (sharing contributes these)."""


@hookspec(firstresult=True)
def flowork_engine_guest_role(engine_id: str, account_id: int) -> str | None:
    """*firstresult*. The role of ``account_id`` on someone else's ``engine_id``, or None."""


@hookspec
def flowork_engines_shared_with(account_id: int) -> list[str]:
    """Ids of engines other users shared with ``account_id``."""


@hookspec(firstresult=True)
def flowork_resolve_engine(
    gateway: Gateway, principal: Principal, engine_id: str | None
) -> EngineTarget | None:
    """*firstresult*. The engine a user principal's proxied request goes to: ``engine_id`` if
    given (owned or shared, else raise 404), else the principal's own most recently seen online
    engine (never a shared one: a guest's signature must not go to another owner unasked).
    Raise ``GatewayError`` 404/503 as API.md says; None means no resolver answered."""


@hookspec
def flowork_proxy_request(
    gateway: Gateway,
    principal: Principal | None,
    target: EngineTarget,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """Called for each request the proxy is about to forward. ``headers`` (lowercase names)
    may be changed in place; raise ``GatewayError`` to refuse the request."""



# --- Flowork contract: realtime presence and change events ------------------------------------


class EngineStatus(NamedTuple):
    """An engine as the GUI's status pushes show it (``flowork_engine_statuses``)."""

    engine_id: str
    name: str
    owner_account_id: int
    online: bool
    last_seen: Any  # naive-UTC datetime or None
    #: True while a realtime socket holds the engine (its lease has not lapsed).
    socket_online: bool = False


@hookspec
def flowork_engine_statuses(account_id: int) -> list[EngineStatus]:
    """Engines ``account_id`` may see, with presence: the engines plugin answers the owned
    ones, the sharing plugin the ones shared with the account. Realtime merges every list for
    ``initial_engine_statuses`` and picks a GUI's default engine from it."""


@hookspec(firstresult=True)
def flowork_engine_status(engine_id: str) -> EngineStatus | None:
    """*firstresult*. One engine's status (owner and presence), or None if it does not exist.
    Realtime uses it to check a GUI command's target and to build status pushes."""


@hookspec(firstresult=True)
def flowork_engine_socket_lease(engine_ids: list[str], holder: str, until: Any,
                                take_over: bool) -> list[str]:
    """*firstresult*. A realtime socket holds these engines: mark them online until ``until``
    (naive UTC) on behalf of ``holder`` (one gateway instance). ``take_over`` (a new socket)
    makes ``holder`` the holder whoever held them before; otherwise (the periodic renewal)
    only leases this holder holds, or that have lapsed, are extended. Returns the ids leased
    (a deleted engine is missing). A lease that is not renewed lapses, so an instance that
    dies holding sockets leaves nothing online for longer than one lease."""


@hookspec(firstresult=True)
def flowork_engine_socket_release(engine_id: str, holder: str, url: str | None) -> bool:
    """*firstresult*. ``holder``'s last socket of ``engine_id`` closed: offline at once if
    ``holder`` still holds the lease (another instance may have taken it over), and the stored
    URL cleared if it is ``url`` (the one the socket registered). True if it went offline."""


@hookspec(firstresult=True)
def flowork_engine_lapsed_leases() -> list[str]:
    """*firstresult*. Engines whose socket lease lapsed without a release (the instance holding
    the socket died), each returned once to exactly one caller, which announces them offline.
    Every instance's realtime plugin calls it once per renewal period."""


@hookspec(firstresult=True)
def flowork_engine_register_url(engine_id: str, url: str) -> str:
    """*firstresult*. Store the URL an engine reported over its socket, under the same policy
    as the heartbeat's ``url``; returns the stored (normalised) URL. Raises ``ValueError``
    (with a reason safe to log) when the URL is refused."""


@hookspec
def flowork_engine_shares_changed(engine_id: str, account_id: int, change: str) -> None:
    """Event, after commit: the share of ``engine_id`` with ``account_id`` was ``created``,
    ``role_changed`` or ``revoked`` (seed and alias routes alike). Sharing calls it; realtime
    tells the engine to re-read its auth list and the guest about the new or removed engine.
    Called from request threads: implementations must not block."""


@hookspec
def flowork_kill_switch_changed(component_id: str, disabled: bool) -> None:
    """Event, after commit: a component was disabled (``disabled``) or enabled again through
    the kill switch. Realtime tells every connected engine to sync. Must not block."""


@hookspec
def flowork_engine_credentials_revoked(engine_id: str, owner_account_id: int,
                                       deleted: bool) -> None:
    """Event, after commit: ``engine_id``'s token was reset, or the engine ``deleted``. Realtime
    refuses and closes the engine's open sockets and, on delete, tells the owner's GUIs
    (``engine_deleted``). Must not block."""
