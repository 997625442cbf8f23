"""The gateway: loads plugins, resolves settings, wires the Falcon app, owns auth dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

import falcon
import peewee
import pluggy
from stevedore import named
from stevedore.exception import NoMatches

from . import hookspecs
from .accounts import KERNEL_MIGRATIONS, Account, ensure_account, find_by_username
from .api import PRINCIPAL_KINDS, PROJECT, AuthScheme, GatewayPlugin, Principal, Route, Sink
from .config import (
    BUNDLED,  # noqa: F401  (re-exported: gateway_kernel.app.BUNDLED)
    Config,
    ConfigError,
    Setting,
    as_choice,
    as_int,
    as_list,
    as_origins,
    as_seconds,
    as_str,
    expand_plugin_names,
)
from .db import (
    DATABASE_DOWN_ERRORS,
    Migration,
    MigrationRecord,
    activate,
    database,
    deactivate,
    default_database_url,
    migrate,
    open_database,
    release_connection,
)
from .errors import GatewayError, handle_unexpected, serialize_error
from .http import DEFAULT_MAX_BODY
from .observe import (
    CONTEXT_KEY,
    LOG_FORMATS,
    LOG_LEVELS,
    REQUEST_ID,
    Metrics,
    ObservedASGI,
    Observer,
    observed_wsgi_call,
    set_route,
    sink_route,
)
from .throttle import AuthThrottle, build_throttle, client_address, log_auth_failure
from .workers import WorkerPool

log = logging.getLogger("gateway_kernel")

ENTRY_POINT_GROUP = "flowork_gateway.plugins"
API_PREFIX = "/api/v1"
KERNEL = "kernel"

KERNEL_SETTINGS = (
    Setting("DATABASE_URL", as_str, None, "peewee database URL (default: SQLite in ./data/)"),
    Setting("FLOWORK_PLUGINS", as_list, ["bundled"],
            "enabled plugins; 'bundled' = every bundled plugin", allow_empty=False),
    Setting("FLOWORK_AUTH_SCHEMES", as_list, [], "auth scheme order (default: plugin order)"),
    Setting("FLOWORK_CORS_ORIGINS", as_origins, ["*"], "allowed CORS origins", allow_empty=False),
    Setting("FLOWORK_MAX_BODY_BYTES", as_int(1), DEFAULT_MAX_BODY, "largest JSON request body"),
    Setting("FLOWORK_DB_POOL_SIZE", as_int(1, 1000), 20, "PostgreSQL pool size per process"),
    Setting("FLOWORK_DB_POOL_TIMEOUT_S", as_seconds(0, 600), 10.0, "wait for a pooled connection"),
    Setting("FLOWORK_REDIS_URL", as_str, None,
            "Redis for state shared between instances (default none)"),
    Setting("FLOWORK_LOG_FORMAT", as_choice(LOG_FORMATS), "text",
            "log lines as text or json (one object per line)"),
    Setting("FLOWORK_LOG_LEVEL", as_choice(LOG_LEVELS), "info",
            "lowest level logged; info includes one access line per request"),
    Setting("FLOWORK_METRICS_ADDRESS", as_str, None,
            "host:port of a separate listener serving /metrics without auth (default: none; "
            "GET /metrics with the service key always works)"),
    Setting("FLOWORK_AUTH_FAIL_LIMIT", as_int(0), 300,
            "failed authentications per client address and window before 429 (0: off)"),
    Setting("FLOWORK_AUTH_FAIL_WINDOW_S", as_seconds(1, 86400), 300.0,
            "window of FLOWORK_AUTH_FAIL_LIMIT, seconds"),
)

#: How the process serves: the kernel's worker pool and the ASGI server's connection policy
#: (gateway_kernel/serving.py; README "Serving").
SERVER_SETTINGS = (
    Setting("FLOWORK_WORKER_THREADS", as_int(1, 1000), 4,
            "threads running plugin code (database, hooks) per process; serve --threads overrides"),
    Setting("FLOWORK_SERVER_HEADER_TIMEOUT_S", as_seconds(0.1, 3600), 10.0,
            "a connection whose request head is not complete after this is closed"),
    Setting("FLOWORK_SERVER_IDLE_TIMEOUT_S", as_seconds(0.1, 3600), 30.0,
            "an idle keep-alive connection is closed, a request body silent this long is a 408"),
    Setting("FLOWORK_SERVER_STOP_TIMEOUT_S", as_seconds(0, 3600), 30.0,
            "on SIGTERM/SIGINT, how long in-flight requests may take to finish"),
    Setting("FLOWORK_SERVER_MAX_CONNECTIONS", as_int(10, 1_000_000), 2000,
            "open connections per process; above it idle and header-incomplete ones are closed"),
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Request ids: a random per-process prefix and a counter (32 hex digits, like uuid4().hex).
# Unique across instances and restarts, and no getrandom() system call per request: every
# system call releases the GIL, and under load each release costs thread switches.
_request_id_prefix = ""
_request_counter = itertools.count()


def _reseed_request_ids() -> None:
    global _request_id_prefix, _request_counter
    _request_id_prefix = os.urandom(8).hex()
    _request_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


_reseed_request_ids()
if hasattr(os, "register_at_fork"):  # a forked worker must not repeat its parent's ids
    os.register_at_fork(after_in_child=_reseed_request_ids)


def _new_request_id() -> str:
    return f"{_request_id_prefix}{next(_request_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_FIELD = re.compile(r"\{[^}]*\}")
_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,49}")


class PluginError(ConfigError):
    """A plugin is missing, broken, misdeclared, or clashes with another."""


@dataclass
class PluginInfo:
    name: str
    version: str
    description: str
    requires: tuple[str, ...]
    hooks: list[str] = field(default_factory=list)
    #: Hooks this plugin declares for others (its hookspecs module).
    declares: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        """The tables of this plugin's models (the former name of ``tables``)."""
        return self.tables


def available_plugins() -> dict[str, str]:
    """Every installed plugin entry point: name → 'module:attr'."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def plugin_hookspecs(plugin: GatewayPlugin) -> ModuleType | None:
    """The module of hooks ``plugin`` declares: its ``hookspecs`` attribute, else its
    package's ``hookspecs`` module if there is one."""
    declared = getattr(plugin, "hookspecs", None)
    if declared is not None:
        if not isinstance(declared, ModuleType):
            raise PluginError(f"plugin {plugin.name!r}: 'hookspecs' must be a module")
        return declared
    package = type(plugin).__module__.rpartition(".")[0]
    if not package:
        return None
    try:
        found = importlib.util.find_spec(f"{package}.hookspecs")
    except ImportError:
        return None
    return importlib.import_module(f"{package}.hookspecs") if found is not None else None


def load_plugins(names: Sequence[str]) -> list[GatewayPlugin]:
    """Instantiate the named plugins through stevedore, loudly."""
    if not names:
        return []
    failures: list[str] = []

    def on_failure(_manager, entrypoint, exc) -> None:
        failures.append(f"plugin {entrypoint.name!r} failed to load: {exc!r}")

    try:
        manager = named.NamedExtensionManager(
            ENTRY_POINT_GROUP,
            names=list(names),
            invoke_on_load=True,
            name_order=True,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=lambda missing: failures.append(
                "plugin(s) not installed: "
                + ", ".join(sorted(missing))
                + f" (installed: {', '.join(sorted(available_plugins())) or 'none'})"
            ),
        )
    except NoMatches:
        manager = None
    if failures:
        raise PluginError("; ".join(failures))
    return [ext.obj for ext in manager] if manager else []


class Gateway:
    """One configured gateway: plugin manager, settings, database and the Falcon app.

    Build with :func:`create_gateway`. A Gateway is a WSGI application.
    """

    def __init__(
        self,
        config: Config,
        plugins: Sequence[GatewayPlugin],
    ) -> None:
        self.config = config
        self.plugins: dict[str, GatewayPlugin] = {}
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        for plugin in plugins:
            self._check_plugin(plugin)
            self.plugins[plugin.name] = plugin
        # Every plugin's own specs first, so that registering validates each hookimpl.
        added: set[ModuleType] = set()
        for plugin in self.plugins.values():
            specs = plugin_hookspecs(plugin)
            if specs is not None and specs not in added:  # two plugins of one package
                added.add(specs)
                self.pm.add_hookspecs(specs)
        # pluggy calls the last registered plugin first: registering in reverse load order
        # makes every hook run in load order (gateway_kernel.hookspecs, "Call order").
        for plugin in reversed(self.plugins.values()):
            self.pm.register(plugin, name=plugin.name)
        self._check_requirements()
        #: Table name -> owner (plugin name, or "kernel"); a table has one owner.
        self.table_owners = self._check_tables()
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = getattr(exc.plugin, "name", exc.plugin)
            raise PluginError(f"plugin {name!r}: {exc}") from None

        for plugin in self.plugins.values():
            config.declare(plugin.name, plugin.settings)
        self.max_body = config["FLOWORK_MAX_BODY_BYTES"]
        #: The largest request body the server accepts at all: the JSON limit, unless a plugin
        #: that takes bigger bodies (the proxy's uploads) raised it with allow_request_body().
        #: Waitress receives a whole body, spooled to a temporary file, before any code runs.
        self.request_body_limit = self.max_body
        url = config["DATABASE_URL"] or default_database_url()
        self.database_url = url
        try:
            self.db = open_database(
                url, config["FLOWORK_DB_POOL_SIZE"], config["FLOWORK_DB_POOL_TIMEOUT_S"]
            )
        except ValueError as exc:
            raise ConfigError(f"DATABASE_URL: {exc}") from None
        database.initialize(self.db)
        self.hook = self.pm.hook
        # The veto hook runs on every authenticated request: skip pluggy when nobody vetoes.
        self._authorize = (self.hook.gateway_authorize
                           if self.hook.gateway_authorize.get_hookimpls() else None)
        self._admit: Any = None  # set after gateway_configure (see _admission)
        self._started = False
        #: Failed-authentication throttle per client address (None: disabled); other
        #: authenticating entry points (sockets) use it too.
        self.auth_throttle: AuthThrottle | None = build_throttle(
            config["FLOWORK_AUTH_FAIL_LIMIT"], config["FLOWORK_AUTH_FAIL_WINDOW_S"],
            config["FLOWORK_REDIS_URL"])
        # Declared by the proxy plugin (a setting has one owner); without it, no proxy is
        # trusted and the client is the TCP peer.
        self.trusted_proxies = tuple(config.get("FLOWORK_TRUSTED_PROXIES") or ())
        self._closed = False
        #: The asyncio loop serving :attr:`asgi` (set before gateway_startup under ASGI).
        self.loop: asyncio.AbstractEventLoop | None = None
        #: "uvicorn" or "waitress" under ``flowork-gateway serve``; None in tests/embedding.
        self.server: str | None = None
        self.worker_threads: int = config["FLOWORK_WORKER_THREADS"]
        self._pool: WorkerPool | None = None
        self._health_pool: WorkerPool | None = None
        self._asgi: Any = None
        #: Prometheus series of this gateway; plugins add theirs (``metrics.counter`` …).
        self.metrics = Metrics()
        self._observer = Observer(self.metrics)
        self._metrics_server: Any = None
        self.metrics.gauge("flowork_worker_queue_depth",
                           "Calls waiting for a free worker thread").set_function(
            lambda: self._pool.queue_depth() if self._pool is not None else 0)
        if hasattr(self.db, "_in_use"):  # a pooled database (PostgreSQL, CockroachDB)
            pool_use = self.metrics.gauge("flowork_db_pool_connections",
                                          "Pooled database connections", ("state",))
            pool_use.labels("in_use").set_function(lambda: len(self.db._in_use))
            pool_use.labels("idle").set_function(lambda: len(self.db._connections))

        token = activate(self.db)
        try:
            self.hook.gateway_configure(gateway=self)
            self._admit = self._admission()
            self.schemes = self._collect_schemes()
            self._shapes: dict[str, str] = {}
            #: Route shapes by segment count (None: a path field), for owns_path.
            self._owned_shapes: dict[int, list[tuple[str | None, ...]]] = {}
            self.routes: list[tuple[str, Route]] = []
            self.sinks: list[tuple[str, Sink]] = []
            self.app = self._build_app()
        finally:
            deactivate(token)

    # -- plugins ---------------------------------------------------------------------------

    @staticmethod
    def _check_plugin(plugin: object) -> None:
        name = getattr(plugin, "name", "")
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin object {plugin!r} has no 'name' attribute")
        if not _PLUGIN_NAME.fullmatch(name):
            raise PluginError(
                f"plugin {name!r} ({type(plugin).__module__}.{type(plugin).__qualname__}): a "
                f"plugin name is lowercase letters, digits and '_', starting with a letter, at "
                f"most 50 characters (it keys settings, migrations and routes)"
            )
        for attr in ("version", "requires", "settings"):
            if not hasattr(plugin, attr):
                raise PluginError(f"plugin {name!r} lacks the {attr!r} attribute")
        if name == KERNEL:
            raise PluginError("'kernel' is reserved")

    def _check_requirements(self) -> None:
        for plugin in self.plugins.values():
            for required in plugin.requires:
                if required not in self.plugins:
                    raise PluginError(
                        f"plugin {plugin.name!r} requires plugin {required!r}, which is not "
                        f"enabled (add it to FLOWORK_PLUGINS)"
                    )

    def _check_tables(self) -> dict[str, str]:
        """Refuse a model on a table that the kernel or another plugin already owns."""
        owners = {model._meta.table_name: KERNEL for model in (Account, MigrationRecord)}
        for plugin, models in self._per_plugin("gateway_models"):
            for model in models:
                table = model._meta.table_name
                owner = owners.setdefault(table, plugin)
                if owner != plugin:
                    held = "the kernel" if owner == KERNEL else f"plugin {owner!r}"
                    raise PluginError(
                        f"table clash: plugin {plugin!r} declares model {model.__name__} on "
                        f"table {table!r}, which {held} owns (prefix tables with the plugin "
                        f"name)"
                    )
        return owners

    def _per_plugin(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call one hook through pluggy plugin by plugin, in pluggy's (the documented) order,
        keeping who answered what: [(plugin name, its non-None answer)]."""
        firstresult = self._firstresult(hook_name)
        results = []
        for plugin, call in self._callers_by_plugin(hook_name):
            answer = call(**kwargs)
            for value in ([answer] if firstresult else answer):
                if value is not None:
                    results.append((plugin, value))
        return results

    def _firstresult(self, hook_name: str) -> bool:
        caller = getattr(self.pm.hook, hook_name)
        return bool(caller.spec and caller.spec.opts.get("firstresult"))

    def _callers_by_plugin(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, a pluggy caller of ``hook_name`` limited to that plugin), in call
        order: for hooks where each answer is kept apart or feeds the next call."""
        caller = getattr(self.pm.hook, hook_name)
        callers = []
        # get_hookimpls() lists implementations in reverse call order.
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            others = [p for name, p in self.pm.list_name_plugin() if name != impl.plugin_name]
            callers.append((impl.plugin_name, self.pm.subset_hook_caller(hook_name, others)))
        return callers

    def allow_request_body(self, size: int) -> None:
        """Let the server accept request bodies of ``size`` bytes (call in gateway_configure).

        Routes still enforce their own, smaller limits; this is the server's outer bound."""
        self.request_body_limit = max(self.request_body_limit, int(size))

    def migration_plan(self) -> list[tuple[str, list[Migration]]]:
        plan: list[tuple[str, list[Migration]]] = [(KERNEL, list(KERNEL_MIGRATIONS))]
        done: set[str] = set()
        by_plugin = dict(self._per_plugin("gateway_migrations"))

        def visit(name: str, stack: tuple[str, ...] = ()) -> None:
            if name in done:
                return
            if name in stack:
                raise PluginError(f"plugin requirement cycle: {' -> '.join((*stack, name))}")
            for required in self.plugins[name].requires:
                visit(required, (*stack, name))
            done.add(name)
            if name in by_plugin:
                plan.append((name, list(by_plugin[name])))

        for name in self.plugins:
            visit(name)
        return plan

    def migrate(self) -> list[str]:
        return migrate(self.db, self.migration_plan())

    def plugin_info(self) -> list[PluginInfo]:
        infos = []
        for name, plugin in self.plugins.items():
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
            specs = plugin_hookspecs(plugin)
            declares = sorted(n for n, f in vars(specs).items()
                              if hasattr(f, f"{PROJECT}_spec")) if specs else []
            infos.append(
                PluginInfo(
                    name=name,
                    version=str(plugin.version),
                    description=getattr(plugin, "description", ""),
                    requires=tuple(plugin.requires),
                    hooks=hooks,
                    declares=declares,
                    tables=sorted(t for t, o in self.table_owners.items() if o == name),
                    routes=[f"{API_PREFIX}{r.path}" for o, r in self.routes if o == name],
                    settings=[s.name for s in plugin.settings],
                )
            )
        return infos

    # -- auth ------------------------------------------------------------------------------

    def _collect_schemes(self) -> dict[str, list[AuthScheme]]:
        found: list[AuthScheme] = []
        for _plugin, schemes in self._per_plugin("gateway_auth_schemes", gateway=self):
            found.extend(schemes)
        order = self.config["FLOWORK_AUTH_SCHEMES"]
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

    def authenticate(self, req: falcon.Request, kind: str, *,
                     sink: bool = False) -> Principal | None:
        """The principal of ``kind`` for this request, or a 401/503 error. ``public`` → None.

        Schemes run in configured order; a present-but-wrong credential stops the search.
        A principal restricted to an audience (an exposed credential) is refused unless a
        sink (``sink=True``) asked: the sink checks its own target with :meth:`check_audience`.
        """
        if kind == "public":
            return None
        throttle = self.auth_throttle
        client = client_address(req, self.trusted_proxies)
        if throttle is not None:
            throttle.check(client)  # 429 before any credential is looked at
        schemes = self.schemes[kind]
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
                    self.metrics.auth_failures.labels(scheme.name, code).inc()
                    if throttle is not None:
                        throttle.failed(client)
                raise
            if principal is not None:
                if self._authorize is not None:
                    self._authorize(gateway=self, principal=principal, req=req)
                req.context.principal = principal
                return principal
        raise schemes[0].missing()

    def _admission(self) -> Any:
        """The gateway_admit caller, without plugins that said (in gateway_configure, with
        ``admits_nothing = True``) that they admit everything under their settings; None when
        nobody is left, so requests skip the hook (and health stays on the event loop)."""
        idle = [p for p in self.plugins.values() if getattr(p, "admits_nothing", False)]
        caller = (self.pm.subset_hook_caller("gateway_admit", remove_plugins=idle) if idle
                  else self.hook.gateway_admit)
        return caller if caller.get_hookimpls() else None

    def admit(self, req: falcon.Request, resp: falcon.Response, group: str) -> None:
        """Let ``gateway_admit`` hooks refuse or annotate an authenticated request."""
        if self._admit is not None:
            self._admit(gateway=self, req=req, resp=resp, principal=req.context.principal,
                        group=group)

    def client_address(self, req: falcon.Request) -> str:
        """The client's network address (behind FLOWORK_TRUSTED_PROXIES, the nearest
        untrusted X-Forwarded-For hop)."""
        return client_address(req, self.trusted_proxies)

    def check_audience(self, principal: Principal, audience: str) -> None:
        """Refuse ``principal`` if its credential is restricted to another audience."""
        if principal.audience is not None and principal.audience != audience:
            scheme = next(s for s in self.schemes[principal.kind] if s.name == principal.scheme)
            raise scheme.exposed(principal)

    # -- accounts --------------------------------------------------------------------------

    def ensure_account(self, address: str) -> Account:
        defaults = self.hook.gateway_account_defaults(address=address) or {}
        return ensure_account(address, defaults)

    def find_account(self, identifier: str) -> Account | None:
        """An account by any identifier a scheme understands, else by username."""
        account = self.hook.gateway_resolve_account(gateway=self, identifier=identifier)
        if account is not None:
            return account
        return find_by_username(identifier)

    def user_permissions(self, account: Account) -> list[str]:
        merged: list[str] = []
        for perms in self.hook.gateway_user_permissions(gateway=self, account=account):
            merged.extend(p for p in perms if p not in merged)
        return merged

    # -- HTTP ------------------------------------------------------------------------------

    def _build_app(self) -> falcon.App:
        self.health = HealthResource(self)
        self._kernel_middleware = KernelMiddleware(self)
        self._plugin_middleware: list[object] = []
        for _plugin, items in self._per_plugin("gateway_middleware", gateway=self):
            self._plugin_middleware.extend(items)
        app = falcon.App(middleware=[self._kernel_middleware, *self._plugin_middleware])
        app.req_options.auto_parse_form_urlencoded = False
        app.set_error_serializer(serialize_error)
        app.add_error_handler(Exception, handle_unexpected)
        app.add_error_handler(DATABASE_DOWN_ERRORS, _database_down)

        routes: list[tuple[str, Route]] = [
            (KERNEL, Route("/system/health", self.health, "public")),
            (KERNEL, Route("/openapi.json", OpenAPIResource(self), "public")),
        ]
        if "service" in self.schemes:  # else only FLOWORK_METRICS_ADDRESS serves them
            routes.append((KERNEL, Route("/metrics", MetricsResource(self.metrics), "service",
                                         prefixed=False)))
        for plugin, items in self._per_plugin("gateway_routes", gateway=self):
            routes.extend((plugin, r) for r in items)
        for plugin, route in routes:
            self._add_route(app, plugin, route)
        for plugin, sinks in self._per_plugin("gateway_sinks", gateway=self):
            for sink in sinks:
                self._add_sink(app, plugin, sink)
        return app

    def _add_route(self, app: falcon.App, plugin: str, route: Route) -> None:
        _check_path(plugin, "route", route.path)
        shape = _FIELD.sub("{}", route.path.rstrip("/") or "/")
        owner = self._shapes.get(shape)
        if owner is not None:
            raise PluginError(
                f"route clash: {API_PREFIX}{route.path} is registered by both plugin "
                f"{owner!r} and plugin {plugin!r}"
            )
        for kind in _route_kinds(route):
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
        served = {m for m in falcon.COMBINED_METHODS if hasattr(route.resource, f"on_{m.lower()}")}
        _RouteAuth.attach(route.resource, route, served, plugin)
        app.add_route(route.full_path, route.resource)

    def owns_path(self, req: falcon.Request) -> bool:
        """True if the path is a route's path spelled another way: with trailing slashes, or
        with an encoded slash (``%2F``) inside what the route takes as one path field.

        Sinks see only paths no route matched; a spelling Falcon does not route must still
        never reach them (API.md: a path a plugin owns is never proxied)."""
        path = req.path
        if not path.startswith(API_PREFIX):
            return False
        if self._matches_route(path[len(API_PREFIX):].rstrip("/").split("/")[1:]):
            return True
        raw = _raw_path(req)
        if raw is None or "%2f" not in raw.lower():
            return False
        # Split where the client put slashes, then decode each segment (%2F stays inside).
        raw = raw.rstrip("/")
        if not raw.startswith(API_PREFIX + "/"):
            return False
        return self._matches_route(
            [unquote(s) for s in raw[len(API_PREFIX):].split("/")[1:]])

    def enter_sink(self, req: falcon.Request, resp: falcon.Response, auth: str,
                   owner: str, route: str = "") -> None:
        """What every sink request passes first (both servers): a route's path in another
        spelling is 404, never the sink; then authentication and admission. ``route`` is the
        sink's label in access logs and metrics."""
        req.context.route = route
        if self.owns_path(req):
            raise GatewayError(404, "not_found", "Not found")
        self.authenticate(req, auth, sink=True)
        self.admit(req, resp, owner)

    def _matches_route(self, segments: list[str]) -> bool:
        for shape in self._owned_shapes.get(len(segments), ()):
            if all(seg == want if want is not None else seg != ""
                   for seg, want in zip(segments, shape, strict=True)):
                return True
        return False

    def _add_sink(self, app: falcon.App, plugin: str, sink: Sink) -> None:
        _check_path(plugin, "sink", sink.prefix)
        if sink.auth != "public" and sink.auth not in self.schemes:
            raise PluginError(
                f"plugin {plugin!r}: sink {sink.prefix} needs {sink.auth!r} principals but no "
                f"enabled plugin supplies that auth scheme"
            )
        prefix = (API_PREFIX + sink.prefix).rstrip("/")
        pattern = self.sink_pattern(prefix)
        gateway = self
        route = sink_route(prefix)

        def responder(req: falcon.Request, resp: falcon.Response, path: str | None = None) -> None:
            gateway.enter_sink(req, resp, sink.auth, plugin, route)
            sink.handler(req, resp, (sink.prefix.rstrip("/") + (path or "")) or "/")

        self.sinks.append((plugin, sink))
        app.add_sink(responder, pattern)

    @staticmethod
    def sink_pattern(prefix: str) -> re.Pattern[str]:
        return re.compile("^" + re.escape(prefix) + r"(?P<path>/.*)?$")

    # -- ASGI ------------------------------------------------------------------------------

    @property
    def asgi(self) -> Any:
        """This gateway as an ASGI 3 application (built once, on first use).

        The native ``falcon.asgi.App`` over the same routes and sinks, wrapped by every
        ``gateway_asgi_middleware`` hook in plugin load order (the last plugin's outermost).
        """
        if self._asgi is None:
            from .asgi import build_asgi_app

            app = ObservedASGI(
                build_asgi_app(self, self._kernel_middleware, self._plugin_middleware),
                self._observer)
            # Each plugin wraps the previous result: called plugin by plugin, through pluggy.
            for _plugin, call in self._callers_by_plugin("gateway_asgi_middleware"):
                for wrapped in call(gateway=self, app=app):
                    if wrapped is not None:
                        app = wrapped
            self._asgi = app
        return self._asgi

    @property
    def pool(self) -> WorkerPool:
        """The bounded pool where plugin code runs under ASGI (``FLOWORK_WORKER_THREADS``)."""
        if self._pool is None:
            self._pool = WorkerPool(self.worker_threads, "flowork-worker", self.db)
        return self._pool

    async def run_sync(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run blocking ``fn`` in the kernel's pool with this gateway's database active there;
        the thread's pooled connection is given back afterwards. Exceptions propagate."""
        return await self.pool.run(fn, args, kwargs)

    async def probe_database(self) -> None:
        """The health check's ``SELECT 1``, on a thread of its own: health reports whether
        this process and its database answer, also while every worker thread is busy."""
        if self._health_pool is None:
            self._health_pool = WorkerPool(1, "flowork-health", self.db)
        await self._health_pool.run(self.health.probe, (), {})

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        """Call the startup hooks once (after migrations)."""
        if not self._started:
            token = activate(self.db)
            try:
                self.hook.gateway_startup(gateway=self)
            finally:
                deactivate(token)
            self._started = True

    def close(self) -> None:
        """Call the shutdown hooks and close the database and the pool (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.hook.gateway_shutdown(gateway=self)
        finally:
            if not self.db.is_closed():
                self.db.close()
            close_all = getattr(self.db, "close_all", None)
            if close_all:
                close_all()
            self._stop_metrics_listener()
            for pool in (self._pool, self._health_pool):
                if pool is not None:
                    pool.shutdown()
            self._pool = self._health_pool = None  # a later run_sync makes new ones
            if self.server is not None:  # a served gateway says it stopped cleanly
                log.info("gateway closed (shutdown hooks done)")

    def activate(self) -> Any:
        """Route model queries in this context to this gateway's database (returns a token
        for ``gateway_kernel.db.deactivate``; prefer :meth:`using_db`)."""
        return activate(self.db)

    @contextlib.contextmanager
    def using_db(self) -> Iterator[peewee.Database]:
        """``with gateway.using_db(): Model.select()…`` — queries go to this gateway's database."""
        token = activate(self.db)
        try:
            yield self.db
        finally:
            deactivate(token)

    def release_db(self) -> None:
        """Give back the request's pooled connection early (before a slow upstream call)."""
        release_connection(self.db)

    def __call__(self, environ: dict, start_response: Any) -> Iterable[bytes]:
        token = activate(self.db)
        try:
            return observed_wsgi_call(self.app, self._observer, environ, start_response)
        finally:
            deactivate(token)

    # -- observability ---------------------------------------------------------------------

    def start_metrics_listener(self) -> None:
        """Serve /metrics without auth on FLOWORK_METRICS_ADDRESS (host:port), if set."""
        address = self.config["FLOWORK_METRICS_ADDRESS"]
        if not address or self._metrics_server is not None:
            return
        from prometheus_client import start_http_server

        host, _, port = address.rpartition(":")
        try:
            self._metrics_server = start_http_server(int(port), host.strip("[]") or "127.0.0.1",
                                                     registry=self.metrics.registry)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"FLOWORK_METRICS_ADDRESS {address!r}: {exc}") from None
        log.info("metrics on http://%s/metrics", address)

    def _stop_metrics_listener(self) -> None:
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            server.shutdown()
            server.server_close()
            thread.join(5)
            self._metrics_server = None


def _raw_path(req: falcon.Request) -> str | None:
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


def _check_path(plugin: str, what: str, path: object) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        raise PluginError(
            f"plugin {plugin!r}: {what} path {path!r} must start with '/' (paths are relative "
            f"to {API_PREFIX}; without the slash it would be served at {API_PREFIX}{path})"
        )


def _route_kinds(route: Route) -> set[str]:
    return {route.auth} if isinstance(route.auth, str) else set(route.auth.values())


class _RouteAuth:
    """Per-resource auth table, attached once at start-up (no per-request work).

    Keyed by resource object: give each route its own resource instance."""

    ATTR = "__flowork_route_auth__"

    OWNER = "__flowork_route_owner__"

    @classmethod
    def attach(cls, resource: object, route: Route, served: set[str], owner: str) -> None:
        table = getattr(resource, cls.ATTR, None)
        if table is not None:
            raise PluginError(f"route {route.path}: resource object is already routed elsewhere")
        if table is None:
            table = {}
            try:
                setattr(resource, cls.ATTR, table)
            except AttributeError:
                raise PluginError(f"route {route.path}: resource must allow attributes") from None
        for method in served:
            table[method] = route.auth_for(method)
        setattr(resource, cls.OWNER, owner)

    @classmethod
    def kind(cls, resource: object, method: str) -> str | None:
        table = getattr(resource, cls.ATTR, None)
        return None if table is None else table.get(method)


def _database_down(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    req.context.db_broken = True
    log.warning("database unavailable (request_id=%s): %s", getattr(req.context, "request_id", "-"), ex)
    raise GatewayError(503, "database_unavailable", "Database unavailable, retry shortly",
                       {"Retry-After": "1"})


class KernelMiddleware:
    """Request id, CORS, auth dispatch for routes, and connection release."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        origins = gateway.config["FLOWORK_CORS_ORIGINS"]
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)
        headers = {"Content-Type", "X-Request-ID"}
        for schemes in gateway.schemes.values():
            for scheme in schemes:
                headers.update(scheme.headers)
        for extra in gateway.hook.gateway_cors_headers():
            headers.update(extra)
        self.allow_headers = ", ".join(sorted(headers))
        self.allow_methods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        self.max_body = gateway.max_body

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        request_id = req.get_header("X-Request-ID")
        if not request_id or not _REQUEST_ID.match(request_id):
            request_id = _new_request_id()
        req.context.request_id = request_id
        req.context.max_body = self.max_body
        req.context.principal = None
        REQUEST_ID.set(request_id)  # on every log line this request causes
        # For the access log written after the last byte, outside Falcon (observe.py).
        carrier = getattr(req, "scope", None)
        (carrier if carrier is not None else req.env)[CONTEXT_KEY] = req.context
        resp.set_header("X-Request-ID", request_id)
        if self.any_origin:
            resp.set_header("Access-Control-Allow-Origin", "*")
        else:
            origin = req.get_header("Origin")
            if origin and origin in self.origins:
                resp.set_header("Access-Control-Allow-Origin", origin)
                resp.append_header("Vary", "Origin")
        if req.method == "OPTIONS":
            # Preflights never need auth and never reach a plugin (or an engine).
            resp.set_header("Access-Control-Allow-Methods", self.allow_methods)
            resp.set_header("Access-Control-Allow-Headers", self.allow_headers)
            resp.set_header("Access-Control-Max-Age", "600")
            resp.status = falcon.HTTP_204
            resp.complete = True

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         params: dict) -> None:
        if resource is None:  # sinks authenticate themselves
            return
        kind = _RouteAuth.kind(resource, req.method)
        if kind is None:  # method not served here: Falcon answers 405
            return
        self.gateway.authenticate(req, kind)
        self.gateway.admit(req, resp, getattr(resource, _RouteAuth.OWNER))

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        set_route(req)
        broken = getattr(req.context, "db_broken", False)
        if broken:
            self.gateway.health.healthy_until = 0.0
        release_connection(self.gateway.db, broken=broken)


class MetricsResource:
    """GET /metrics: Prometheus text format (service principal)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        from .observe import METRICS_CONTENT_TYPE

        resp.content_type = METRICS_CONTENT_TYPE
        resp.data = self.metrics.render()


class HealthResource:
    """GET /system/health: is the database answering?

    A healthy answer is reused for HEALTH_CACHE_S, so load balancers polling every instance
    do not each cost a query; any request that meets a database error ends that at once.
    """

    HEALTH_CACHE_S = 0.5
    HEALTHY = b'{"status":"healthy","database":"connected"}'
    UNHEALTHY = b'{"status":"unhealthy","database":"disconnected"}'

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.healthy_until = 0.0  # time.monotonic(); reset by KernelMiddleware on DB errors

    def fresh(self) -> bool:
        return time.monotonic() < self.healthy_until

    def probe(self) -> None:
        """``SELECT 1``; raises the database's error when it is down."""
        now = time.monotonic()
        self.gateway.db.execute_sql("SELECT 1").fetchone()
        self.healthy_until = now + self.HEALTH_CACHE_S

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        if self.fresh():
            resp.data = self.HEALTHY
            return
        try:
            self.probe()
        except (*DATABASE_DOWN_ERRORS, peewee.DatabaseError):
            req.context.db_broken = True
            resp.status = falcon.HTTP_503
            resp.data = self.UNHEALTHY
            return
        resp.data = self.HEALTHY

    on_head = on_get


class OpenAPIResource:
    """GET /openapi.json: the document merged from the enabled plugins (built once)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._body: bytes | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._body is None:
            import json

            from .openapi import build_document

            self._body = json.dumps(build_document(self.gateway)).encode()
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


def create_gateway(
    environ: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
    extra_plugins: Sequence[GatewayPlugin] = (),
) -> Gateway:
    """Build a gateway: settings from ``settings`` > ``environ`` (default ``os.environ``) >
    TOML file; plugins named by ``FLOWORK_PLUGINS`` loaded from entry points, plus
    ``extra_plugins`` objects (for tests and embedding)."""
    config = Config(environ, settings)
    config.declare(KERNEL, KERNEL_SETTINGS + SERVER_SETTINGS)
    names = expand_plugin_names(config["FLOWORK_PLUGINS"])
    extra_names = {p.name for p in extra_plugins}
    plugins = load_plugins([n for n in names if n not in extra_names])
    for plugin, name in zip(plugins, [n for n in names if n not in extra_names], strict=True):
        if plugin.name != name:
            raise PluginError(f"entry point {name!r} loads a plugin named {plugin.name!r}")
    return Gateway(config, [*plugins, *extra_plugins])
