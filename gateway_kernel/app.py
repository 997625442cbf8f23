"""The gateway façade: one configured gateway (plugins, settings, database, the Falcon app).

The work is done where each concern lives: ``loader`` (plugins and their load-time checks),
``auth`` (schemes, authentication, the route auth table), ``routing`` (who owns which path),
``middleware`` (request id, CORS, error handlers, database health), ``system`` (the kernel's
own plugin: health, OpenAPI document, metrics), ``settings`` (the kernel's settings), ``db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import falcon
import peewee

from . import auth, loader
from .accounts import Account, ensure_account, find_by_username
from .api import API_PREFIX, KERNEL, GatewayPlugin, Principal
from .config import Config, ConfigError
from .db import (
    Migration,
    activate,
    database,
    deactivate,
    default_database_url,
    migrate,
    open_database,
    release_connection,
)
from .loader import (
    ENTRY_POINT_GROUP,
    PluginError,
    PluginInfo,
    available_plugins,
    load_plugins,
    plugin_hookspecs,
)
from .middleware import DatabaseHealth, KernelMiddleware, install_error_handlers
from .observe import Metrics, MetricsListener, ObservedASGI, Observer, observed_wsgi_call
from .routing import RouteTable, sink_pattern, wsgi_sink_responder
from .settings import KERNEL_SETTINGS, SERVER_SETTINGS
from .system import SystemPlugin
from .throttle import AuthThrottle, build_throttle, client_address
from .workers import WorkerPool

# Re-exported: what callers import from here (gateway_kernel.app.X).
__all__ = [
    "API_PREFIX", "ENTRY_POINT_GROUP", "KERNEL", "KERNEL_SETTINGS", "SERVER_SETTINGS", "Gateway",
    "PluginError", "PluginInfo", "available_plugins", "create_gateway", "load_plugins",
    "plugin_hookspecs",
]

log = logging.getLogger("gateway_kernel")


class Gateway:
    """One configured gateway: plugin manager, settings, database and the Falcon app.

    Build with :func:`create_gateway`. A Gateway is a WSGI application; :attr:`asgi` is the
    same gateway as an ASGI application.
    """

    def __init__(self, config: Config, plugins: Sequence[GatewayPlugin]) -> None:
        self.config = config
        self.plugins: dict[str, GatewayPlugin] = {}
        for plugin in plugins:
            loader.check_plugin(plugin)
            self.plugins[plugin.name] = plugin
        #: The kernel's own plugin (health, OpenAPI, metrics): first in load order, always on.
        self.system = SystemPlugin()
        self.pm = loader.plugin_manager(self.system, self.plugins)
        self.hook = self.pm.hook
        loader.check_requirements(self.plugins)
        #: Table name -> owner (plugin name, or "kernel"); a table has one owner.
        self.table_owners = loader.check_tables(self._per_plugin("gateway_models"))
        loader.check_pending(self.pm)

        for plugin in self.plugins.values():
            config.declare(plugin.name, plugin.settings)
        self.max_body = config["FLOWORK_MAX_BODY_BYTES"]
        #: The largest request body the server accepts at all: the JSON limit, unless a plugin
        #: that takes bigger bodies (the proxy's uploads) raised it with allow_request_body().
        #: Waitress receives a whole body, spooled to a temporary file, before any code runs.
        self.request_body_limit = self.max_body
        self.database_url = config["DATABASE_URL"] or default_database_url()
        try:
            self.db = open_database(self.database_url, config["FLOWORK_DB_POOL_SIZE"],
                                    config["FLOWORK_DB_POOL_TIMEOUT_S"])
        except ValueError as exc:
            raise ConfigError(f"DATABASE_URL: {exc}") from None
        database.initialize(self.db)
        #: Whether the database answers (the health route; a request meeting a database
        #: error marks it down).
        self.health = DatabaseHealth(self.db)
        self._authorize = auth.veto_caller(self)
        self._admit: Any = None  # set after gateway_configure (auth.admission_caller)
        self._started = False
        #: Failed-authentication throttle per client address (None: disabled); other
        #: authenticating entry points (sockets) use it too.
        self.auth_throttle: AuthThrottle | None = build_throttle(
            config["FLOWORK_AUTH_FAIL_LIMIT"], config["FLOWORK_AUTH_FAIL_WINDOW_S"],
            config["FLOWORK_REDIS_URL"])
        #: Peers whose forwarding headers name the client (none: the client is the TCP peer).
        self.trusted_proxies = tuple(config["FLOWORK_TRUSTED_PROXIES"])
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
        self._metrics_listener = MetricsListener(self.metrics)
        self.metrics.gauge("flowork_worker_queue_depth",
                           "Calls waiting for a free worker thread").set_function(
            lambda: self._pool.queue_depth() if self._pool is not None else 0)
        self.metrics.watch_pool(self.db)

        token = activate(self.db)
        try:
            self.hook.gateway_configure(gateway=self)
            self._admit = auth.admission_caller(self)
            self.schemes = auth.collect_schemes(
                (s for _p, found in self._per_plugin("gateway_auth_schemes", gateway=self)
                 for s in found),
                config["FLOWORK_AUTH_SCHEMES"])
            self._routing = RouteTable(self.schemes)
            self.routes = self._routing.routes
            self.sinks = self._routing.sinks
            #: (route template, method) -> (principal kind, owning plugin).
            self.route_auth = self._routing.auth
            self.app = self._build_app()
        finally:
            deactivate(token)

    # -- plugins ---------------------------------------------------------------------------

    def _per_plugin(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call one hook through pluggy plugin by plugin, in load order, keeping who answered
        what: [(plugin name, its non-None answer)] (the kernel's own plugin first)."""
        return loader.per_plugin(self.pm, hook_name, **kwargs)

    def _callers_by_plugin(self, hook_name: str) -> list[tuple[str, Any]]:
        return loader.callers_by_plugin(self.pm, hook_name)

    def allow_request_body(self, size: int) -> None:
        """Let the server accept request bodies of ``size`` bytes (call in gateway_configure).

        Routes still enforce their own, smaller limits; this is the server's outer bound."""
        self.request_body_limit = max(self.request_body_limit, int(size))

    def migration_plan(self) -> list[tuple[str, list[Migration]]]:
        """(owner, migrations): the kernel's first, then each plugin after those it requires."""
        return loader.migration_plan(self.plugins, dict(self._per_plugin("gateway_migrations")))

    def migrate(self) -> list[str]:
        return migrate(self.db, self.migration_plan())

    def plugin_info(self, kernel: bool = False) -> list[PluginInfo]:
        """What each enabled plugin adds (``flowork-gateway plugins``); ``kernel=True`` puts
        the kernel's own plugin first."""
        return [loader.describe(self, plugin)
                for plugin in ([self.system] if kernel else []) + list(self.plugins.values())]

    # -- auth ------------------------------------------------------------------------------

    def authenticate(self, req: falcon.Request, kind: str, *,
                     sink: bool = False) -> Principal | None:
        """The principal of ``kind`` for this request, or a 401/503 error. ``public`` → None.

        Schemes run in configured order; a present-but-wrong credential stops the search.
        A principal restricted to an audience (an exposed credential) is refused unless a
        sink (``sink=True``) asked: the sink checks its own target with :meth:`check_audience`.
        """
        return auth.authenticate(self, req, kind, sink)

    def admit(self, req: falcon.Request, resp: falcon.Response, group: str) -> None:
        """Let ``gateway_admit`` hooks refuse or annotate an authenticated request."""
        if self._admit is not None:
            self._admit(gateway=self, req=req, resp=resp, principal=req.context.principal,
                        group=group)

    def client_address(self, req: falcon.Request) -> str:
        """The client's network address (behind FLOWORK_TRUSTED_PROXIES, the nearest
        untrusted X-Forwarded-For hop)."""
        return client_address(req, self.trusted_proxies)

    def scheme_headers(self, *kinds: str) -> tuple[str, ...]:
        """Request headers the enabled auth schemes of ``kinds`` read (every kind when none is
        given), in the order the schemes are tried, each once: what CORS allows and what a
        proxy must not pass on."""
        return auth.scheme_headers(self.schemes, kinds)

    def check_audience(self, principal: Principal, audience: str) -> None:
        """Refuse ``principal`` if its credential is restricted to another audience."""
        auth.check_audience(self.schemes, principal, audience)

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
        self._kernel_middleware = KernelMiddleware(self)
        self._plugin_middleware: list[object] = []
        for _plugin, items in self._per_plugin("gateway_middleware", gateway=self):
            self._plugin_middleware.extend(items)
        app = falcon.App(middleware=[self._kernel_middleware, *self._plugin_middleware])
        install_error_handlers(app)
        for plugin, routes in self._per_plugin("gateway_routes", gateway=self):
            for route in routes:
                self._routing.add_route(plugin, route)
                app.add_route(route.full_path, route.resource)
        for plugin, sinks in self._per_plugin("gateway_sinks", gateway=self):
            for sink in sinks:
                self._routing.add_sink(plugin, sink)
                app.add_sink(wsgi_sink_responder(self, plugin, sink),
                             sink_pattern((API_PREFIX + sink.prefix).rstrip("/")))
        return app

    def owns_path(self, req: falcon.Request) -> bool:
        """True if the path is a route's path spelled another way: with trailing slashes, or
        with an encoded slash (``%2F``) inside what the route takes as one path field.

        Sinks see only paths no route matched; a spelling Falcon does not route must still
        never reach them (API.md: a path a plugin owns is never proxied)."""
        return self._routing.owns_path(req)

    def enter_sink(self, req: falcon.Request, resp: falcon.Response, auth: str,
                   owner: str, route: str = "") -> None:
        """What every sink request passes first (both servers): a route's path in another
        spelling is 404, never the sink; then authentication and admission. ``route`` is the
        sink's label in access logs and metrics."""
        self._routing.enter_sink(self, req, resp, auth, owner, route)

    sink_pattern = staticmethod(sink_pattern)

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
            with self.using_db():
                self.hook.gateway_startup(gateway=self)
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
            self._metrics_listener.stop()
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
        self._metrics_listener.start(self.config["FLOWORK_METRICS_ADDRESS"])


def create_gateway(
    environ: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
    extra_plugins: Sequence[GatewayPlugin] = (),
) -> Gateway:
    """Build a gateway: settings from ``settings`` > ``environ`` (default ``os.environ``) >
    TOML file; plugins named by ``FLOWORK_PLUGINS`` loaded from entry points, plus
    ``extra_plugins`` objects (for tests and embedding)."""
    config = Config(environ, settings)
    config.declare(KERNEL, SystemPlugin.settings)
    return Gateway(config, loader.enabled_plugins(config, extra_plugins))
