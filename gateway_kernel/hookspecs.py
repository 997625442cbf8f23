"""The kernel's hooks, grouped by lifecycle: what the kernel calls and plugins implement.

Plugins implement these with ``@gateway_kernel.hookimpl``. Unless a docstring says
*firstresult*, pluggy calls every implementation and returns the list of their non-None
results. A misspelt hook implementation (a ``@hookimpl`` method that matches no spec) fails at
start-up (``pm.check_pending()``).

Plugins declare their own hooks the way pytest plugins do (``pytest_addhooks``): a plugin
specifies the hooks of a contract it takes part in in its ``hookspecs`` module
(``GatewayPlugin.hookspecs``, by default ``<plugin package>.hookspecs`` when that module
exists), and the kernel adds every enabled plugin's specs before it registers any plugin.
Which side declares: when one side ``requires`` the other, the required one (the lower layer:
engines declares what sharing and realtime answer or hear; auth_internal what engines answers),
so both sides always see the spec; otherwise the caller (the proxy declares
``flowork_resolve_engine``), and an implementation of a hook whose declaring plugin it does not
``require`` is marked ``@hookimpl(optionalhook=True)``: it then goes uncalled when that plugin
is disabled. ``tests/kernel/test_hookspecs.py`` fails when a hook (kernel or plugin)
is undocumented or never implemented, and when a bundled plugin implements a hook nobody
declares.

Call order
----------
Every hook, kernel or plugin-declared, is called through pluggy, and pluggy calls its
implementations in plugin *load order*: the kernel's own plugin (``gateway_kernel.system``:
health, OpenAPI document, metrics, the kernel's tables), then ``FLOWORK_PLUGINS`` order (a
bundle name such as ``bundled`` expands to the plugins its ``flowork_gateway.bundles`` entry
point lists, ``gateway_plugins.BUNDLED``), then the ``extra_plugins`` of
``create_gateway``. (The kernel registers plugins in reverse load order, because pluggy calls
the last registered first.) So ``gateway_configure``, ``gateway_startup``, ``gateway_shutdown`` and
``gateway_user_permissions`` run plugin after plugin in load order, and in a *firstresult*
hook the first plugin in load order that answers (non-None) wins. A plugin that must run
earlier or later says so deliberately with ``@hookimpl(tryfirst=True)`` /
``@hookimpl(trylast=True)``; no bundled plugin does.

Where the kernel needs to know which plugin answered what (routes, sinks, middleware, auth
schemes, models, migrations, OpenAPI parts), it calls the hook plugin by plugin in that same
order, each call through pluggy (``pm.subset_hook_caller`` limited to one plugin), so tracing
and a plugin's own wrappers still apply; a wrapper does not see other plugins' answers to
those hooks. No kernel code calls an implementation function directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    """The app is wired and the database migrated; start background work here. Called once,
    in plugin load order."""


@hookspec
def gateway_shutdown(gateway: Gateway) -> None:
    """The gateway is closing: stop background work, close clients. Must not raise. Called
    in plugin load order."""


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
    """Permission names for ``account``; all implementations' lists are merged in plugin load
    order (duplicates dropped)."""


# --- CLI --------------------------------------------------------------------------------------


@hookspec
def gateway_commands() -> list[Command]:
    """Extra ``flowork-gateway`` sub-commands (:class:`~gateway_kernel.api.Command`); a
    command's ``run(gateway, args)`` gets a migrated database unless it says
    ``needs_database=False``. Called only when the command line names a command the
    ``flowork_gateway.commands`` entry points do not provide, after the configuration loads:
    prefer the entry points, whose commands ``--help`` lists fast and even when the
    configuration is broken."""
