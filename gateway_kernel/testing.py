"""pytest fixtures for gateway and plugin tests (loaded through the ``pytest11`` entry point).

- ``make_gateway(plugins="bundled", settings=None, extra_plugins=())``: a migrated, started
  gateway on a throwaway database; closed after the test. Every setting an enabled plugin
  marks as a service credential (``Setting(credential="service")``) gets
  :data:`SERVICE_SECRET` unless ``settings`` gives it.
- ``gateway`` / ``client``: the bundled gateway and a :class:`GatewayTestClient` for it (the
  ASGI app by default, the WSGI app when ``FLOWORK_TEST_SERVER=waitress``).
- ``service_headers``: :data:`SERVICE_SECRET` in the header the service scheme of the test's
  gateways reads (:func:`service_headers_for`).
- ``openapi_check``: every response a test client receives from a documented route is
  checked against the gateway's OpenAPI document (:mod:`gateway_kernel.openapi_check`);
  ``@pytest.mark.no_openapi_check`` turns it off for one test.
- ``make_postgres_database()``: a fresh PostgreSQL database URL, dropped after the test.

Set ``FLOWORK_TEST_POSTGRES_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``)
to run every gateway of the test suite on PostgreSQL: one database is created for the test
session and every gateway gets its own schema in it; both are dropped afterwards. Without it,
each gateway gets its own SQLite file under pytest's ``tmp_path``.

Fixtures never read the process environment for gateway settings: what a test passes in
``settings`` is all the gateway sees.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse, urlunparse

import falcon.testing
import falcon.util.sync
import pytest

from .api import GatewayPlugin
from .app import Gateway, create_gateway
from .config import ConfigError, as_list, expand_plugin_names
from .loader import ENTRY_POINT_GROUP

POSTGRES_ENV = "FLOWORK_TEST_POSTGRES_URL"
#: Which of a gateway's two faces tests drive: "uvicorn" (ASGI, the default) or "waitress" (WSGI).
SERVER_ENV = "FLOWORK_TEST_SERVER"
#: The service credential of fixture-built gateways: the value of every setting an enabled
#: plugin marks ``credential="service"``.
SERVICE_SECRET = "test-service-secret-" + "x" * 16


def test_server() -> str:
    """``FLOWORK_TEST_SERVER``: "waitress" (tests drive the WSGI app) or the default server."""
    return "waitress" if os.environ.get(SERVER_ENV, "").strip() == "waitress" else "uvicorn"


def served_app(gateway: Gateway) -> Any:
    """The app tests should drive for ``gateway``: its ASGI app, or itself (WSGI) under
    ``FLOWORK_TEST_SERVER=waitress``."""
    if test_server() == "waitress":
        return gateway
    app = getattr(gateway, "_patient_asgi", None)
    if app is None:
        app = gateway._patient_asgi = patient_client(gateway.asgi)  # type: ignore[attr-defined]
    return app


def patient_client(app: Any) -> Any:
    """``app`` as a client that reads the whole answer sees it. falcon.testing's TestClient
    reports ``http.disconnect`` as soon as the request body is sent, while the response is
    still streaming; a real server reports it only when the client goes away, and an app
    that stops streaming to a client that left (the proxy) would cut every answer short."""

    async def patient(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        finished = asyncio.Event()

        async def sending(message: dict) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finished.set()

        async def receiving() -> dict:
            event = await receive()
            if event["type"] == "http.disconnect":
                await finished.wait()
            return event

        try:
            await app(scope, receiving, sending)
        finally:
            finished.set()

    return patient


class _RunnerPerThread:
    """falcon.testing drives an ASGI app on one module-wide asyncio.Runner, so two threads
    simulating requests at once fail ("event loop is already running"). Tests do that (races
    on first sign-in, concurrent claims): give each thread its own runner."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self) -> asyncio.Runner:
        runner = getattr(self._local, "runner", None)
        if runner is None or runner.get_loop().is_closed():
            runner = self._local.runner = asyncio.Runner()
        return runner


falcon.util.sync._active_runner = _RunnerPerThread()


class GatewayTestClient(falcon.testing.TestClient):
    """``falcon.testing.TestClient`` for a gateway, on the app :func:`served_app` picks.
    ``client.gateway`` is the gateway."""

    def __init__(self, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(served_app(gateway), **kwargs)
        self.gateway = gateway


def postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def _with_database(url: str, name: str, query: str = "") -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path="/" + name, query=query))


def _admin_execute(admin_url: str, sql: str) -> None:
    import psycopg2

    parsed = urlparse(admin_url)
    conn = psycopg2.connect(
        dbname=parsed.path.lstrip("/") or "postgres",
        user=parsed.username or "postgres",
        password=parsed.password,
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_postgres_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """Create a uniquely named database; return its URL and a function dropping it."""
    name = f"flowork_test_{os.getpid()}_{secrets.token_hex(4)}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}"')

    def drop() -> None:
        _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return _with_database(admin_url, name), drop


@pytest.fixture(scope="session")
def _flowork_postgres_session_db() -> Iterator[str | None]:
    admin = postgres_admin_url()
    if not admin:
        yield None
        return
    url, drop = create_postgres_database(admin)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def make_postgres_database() -> Iterator[Callable[[], str]]:
    """Factory for fresh PostgreSQL databases (skips the test without PostgreSQL)."""
    admin = postgres_admin_url()
    if not admin:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}")
    drops: list[Callable[[], None]] = []

    def make() -> str:
        url, drop = create_postgres_database(admin)
        drops.append(drop)
        return url

    yield make
    for drop in drops:
        drop()


@pytest.fixture
def gateway_database_url(tmp_path, _flowork_postgres_session_db) -> Iterator[str]:
    """A throwaway database for one test: a PostgreSQL schema, or an SQLite file."""
    pg = _flowork_postgres_session_db
    if pg is None:
        yield f"sqlite:///{(tmp_path / 'gateway.db').as_posix()}"
        return
    schema = f"t_{secrets.token_hex(6)}"
    _admin_execute(pg, f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_database(pg, urlparse(pg).path.lstrip("/"), f"options=-csearch_path%3D{schema}")
    finally:
        _admin_execute(pg, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


GatewayFactory = Callable[..., Gateway]


def credential_settings(plugins: str | Sequence[str], extra_plugins: Sequence[GatewayPlugin] = (),
                        kind: str = "service") -> list[str]:
    """The names of the settings holding a ``kind`` credential (``Setting.credential``) among
    the settings of ``plugins`` (a ``FLOWORK_PLUGINS`` value) and ``extra_plugins``. Plugin
    classes are read, not built; a name that does not load is left to ``create_gateway``
    to report."""
    from importlib.metadata import entry_points

    try:
        names = expand_plugin_names(as_list(plugins))
    except (ConfigError, ValueError):
        return []
    extra_names = {p.name for p in extra_plugins}
    found: list[Iterable[Any]] = [getattr(p, "settings", ()) for p in extra_plugins]
    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in names:
        if name in extra_names or name not in installed:
            continue
        try:
            found.append(getattr(installed[name].load(), "settings", ()))
        except Exception:  # noqa: S112  (create_gateway names the broken plugin)
            continue
    return [s.name for settings in found for s in settings
            if getattr(s, "credential", None) == kind]


@pytest.fixture
def make_gateway(gateway_database_url: str) -> Iterator[GatewayFactory]:
    """Build gateways: ``make_gateway(plugins="bundled", settings={...}, extra_plugins=[...])``.

    ``plugins`` is a FLOWORK_PLUGINS value (string or list). Every gateway a test builds
    shares the test's database unless ``settings`` names another ``DATABASE_URL``, so two
    calls give two instances on one database. The service credential settings of the
    enabled plugins default to ``SERVICE_SECRET`` in tests. ``make_gateway.built`` lists the
    gateways built so far.
    """
    built: list[Gateway] = []

    def make(
        plugins: str | Sequence[str] = "bundled",
        settings: Mapping[str, Any] | None = None,
        extra_plugins: Sequence[GatewayPlugin] = (),
    ) -> Gateway:
        merged: dict[str, Any] = {
            "DATABASE_URL": gateway_database_url,
            "FLOWORK_PLUGINS": plugins if isinstance(plugins, str) else ",".join(plugins),
        }
        merged.update(settings or {})
        for name in credential_settings(merged["FLOWORK_PLUGINS"], extra_plugins):
            merged.setdefault(name, SERVICE_SECRET)
        gateway = create_gateway(environ={}, settings=merged, extra_plugins=extra_plugins)
        built.append(gateway)
        gateway.migrate()
        gateway.start()
        return gateway

    make.built = built  # type: ignore[attr-defined]
    yield make
    for gateway in reversed(built):
        gateway.close()


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> Gateway:
    """The gateway with the bundled plugins, default settings, and a service secret."""
    return make_gateway()


@pytest.fixture
def client(gateway: Gateway) -> GatewayTestClient:
    """A Falcon test client for ``gateway`` (ASGI unless ``FLOWORK_TEST_SERVER=waitress``)."""
    return GatewayTestClient(gateway)


def service_headers_for(gateway: Gateway, secret: str = SERVICE_SECRET) -> dict[str, str]:
    """Headers presenting ``secret`` to ``gateway``'s first ``service`` scheme (in the first
    header it reads); empty when no service scheme is enabled."""
    schemes = gateway.schemes.get("service") or []
    if not schemes or not schemes[0].headers:
        return {}
    return {schemes[0].headers[0]: secret}


class _ServiceHeaders(Mapping[str, str]):
    """:func:`service_headers_for` the first gateway the test built with a service scheme,
    resolved when first read (the fixture exists before the test builds its gateways)."""

    def __init__(self, built: list[Gateway]) -> None:
        self._built = built
        self._headers: dict[str, str] | None = None

    def _resolve(self) -> dict[str, str]:
        if self._headers is None:
            gateway = next((g for g in self._built if g.schemes.get("service")), None)
            if gateway is None:
                raise LookupError("service_headers: the test built no gateway with a service "
                                  "auth scheme (make_gateway) before reading them")
            self._headers = service_headers_for(gateway)
        return self._headers

    def __getitem__(self, name: str) -> str:
        return self._resolve()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __len__(self) -> int:
        return len(self._resolve())

    def __repr__(self) -> str:
        return repr(self._headers) if self._headers is not None else "<service headers>"


@pytest.fixture
def service_headers(make_gateway: GatewayFactory) -> Mapping[str, str]:
    """Headers of the internal service principal in fixture-built gateways: the header the
    service scheme of the test's (first) gateway reads, with ``SERVICE_SECRET``."""
    return _ServiceHeaders(make_gateway.built)  # type: ignore[attr-defined]


# -- OpenAPI conformance ---------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "no_openapi_check: skip the openapi_check fixture's "
                                       "response validation")


@pytest.fixture
def openapi_check(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[None]:
    """Check every response a test client of a gateway receives against that gateway's
    OpenAPI document (:func:`gateway_kernel.openapi_check.check`): request it, or make it
    autouse in a ``conftest.py``. Skipped for tests marked ``no_openapi_check``."""
    if request.node.get_closest_marker("no_openapi_check"):
        yield
        return
    from .openapi_check import check

    original = falcon.testing.TestClient.simulate_request

    def simulate_request(self: Any, method: str = "GET", path: str = "/", *args: Any,
                         **kwargs: Any) -> Any:
        result = original(self, method, path, *args, **kwargs)
        gateway = getattr(self, "gateway", None) or self.app
        if isinstance(gateway, Gateway) and not kwargs.get("_stream_result"):
            check(gateway, method.upper(), path, result.status_code,
                  result.headers.get("content-type", ""), result.content)
        return result

    monkeypatch.setattr(falcon.testing.TestClient, "simulate_request", simulate_request)
    yield
