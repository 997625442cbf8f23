"""Connecting: one proxy every plugin's models bind to, URL-selected backends, pooling.

Plugins subclass :class:`BaseModel`. The proxy routes each query to the database of the
gateway that is handling the current request (a context variable), so that several gateways
can live in one process (tests, embedding) without global state getting in the way.

Connection policy (measured, see docs/PERFORMANCE.md): SQLite keeps one connection per worker
thread open for the life of the thread (closing a WAL connection checkpoints, ~0.4 ms);
PostgreSQL/CockroachDB use a pool and give the connection back at the end of every request.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import os
import select
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import peewee
from playhouse import db_url
from playhouse.pool import PooledDatabase

log = logging.getLogger("gateway_kernel.db")

_current: contextvars.ContextVar[peewee.Database | None] = contextvars.ContextVar(
    "flowork_gateway_db", default=None
)

# Errors that mean "the database is not there right now", answered with 503.
DATABASE_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    peewee.OperationalError,
    peewee.InterfaceError,
)
try:  # the pool's own "no free connection" error
    from playhouse.pool import MaxConnectionsExceeded

    DATABASE_DOWN_ERRORS += (MaxConnectionsExceeded,)
except ImportError:  # pragma: no cover - older peewee
    pass


class RoutedDatabaseProxy(peewee.DatabaseProxy):
    """A DatabaseProxy that resolves to the current gateway's database (context variable),
    falling back to the most recently initialised one."""

    def _target(self) -> peewee.Database:
        db = _current.get()
        if db is None:
            db = self.obj
        if db is None:
            raise peewee.InterfaceError("no gateway database is active")
        return db

    def __getattr__(self, attr: str):
        return getattr(self._target(), attr)

    def __enter__(self):
        return self._target().__enter__()

    def __exit__(self, *exc):
        return self._target().__exit__(*exc)


database = RoutedDatabaseProxy()


def activate(db: peewee.Database) -> contextvars.Token:
    """Route model queries in the current context to ``db``."""
    return _current.set(db)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)


def utcnow() -> dt.datetime:
    """Naive UTC 'now': the one time representation stored in every table."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(peewee.Model):
    """Base class for every plugin's models; name tables ``<plugin>_<thing>``."""

    class Meta:
        database = database
        legacy_table_names = False


# -- connecting --------------------------------------------------------------------------------

SQLITE_PRAGMAS = (
    ("journal_mode", "wal"),
    ("foreign_keys", 1),
    ("busy_timeout", 5000),
    ("synchronous", "normal"),
)


#: libpq options for every PostgreSQL/CockroachDB connection unless the URL sets them: a
#: server that accepts TCP but never answers costs ``connect_timeout`` seconds and a 503, not
#: a worker thread forever; keepalives notice a vanished server on an open connection (~60 s).
POSTGRES_CONNECT_DEFAULTS: dict[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def default_database_url(cwd: Path | None = None) -> str:
    path = (cwd or Path.cwd()) / "data" / "flowork-gateway.db"
    return f"sqlite:///{path.as_posix()}"


def _check_sqlite_folder(folder: Path) -> None:
    """The SQLite file's folder must exist and be writable (SQLite also writes its -wal and
    -shm files there). Only the default ``./data/`` is created: a folder tree made silently
    somewhere else, as whoever runs the gateway, hides a typo in DATABASE_URL."""
    if not folder.exists() and folder.resolve() == (Path.cwd() / "data").resolve():
        try:
            folder.mkdir()
        except OSError as exc:
            raise ValueError(f"cannot create the SQLite folder {folder}: {exc.strerror}") from None
    if not folder.is_dir():
        raise ValueError(f"the SQLite folder {folder} does not exist (create it first; only "
                         f"the default ./data/ is created automatically)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"the SQLite folder {folder} is not writable by this user")


def _require_postgres_driver(scheme: str) -> None:
    """peewee finds out about a missing driver at the first query; say it at start-up."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise ValueError(f"{scheme}:// needs the PostgreSQL driver (psycopg2), which is not "
                         f"installed: pip install 'flowork-gateway[postgres]'") from None


def open_database(url: str, pool_size: int = 20, pool_timeout: float = 10.0) -> peewee.Database:
    """A peewee Database for ``url``.

    ``sqlite:///path`` (WAL, foreign keys, busy timeout), ``postgresql://…`` (pooled),
    ``cockroachdb://…`` (pooled; needs peewee's playhouse.cockroachdb). Plain
    ``postgresql://`` is upgraded to the pooled driver: one connection per request would cost
    a TCP and auth handshake each time.
    """
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme.startswith("sqlite"):
        # sqlite:///relative/path, sqlite:////absolute/path, sqlite:///C:/path, sqlite:///:memory:
        path = url.split("://", 1)[1].split("?", 1)[0]
        database_path = path[1:] if path.startswith("/") else path
        if database_path in ("", ":memory:"):
            database_path = ":memory:"
        else:
            _check_sqlite_folder(Path(database_path).parent)
        # Transactions begin IMMEDIATE: a deferred one that reads and then writes fails at
        # once with "database is locked" when another connection writes meanwhile (SQLite
        # cannot upgrade its read lock without risking deadlock, so busy_timeout never
        # applies); IMMEDIATE takes the write lock at BEGIN, where busy_timeout waits.
        return peewee.SqliteDatabase(
            database_path, pragmas=SQLITE_PRAGMAS, check_same_thread=False, timeout=5,
            lock_type="IMMEDIATE",
        )
    _require_postgres_driver(parsed.scheme)
    if scheme in ("postgres", "postgresql", "postgresext", "postgresqlext"):
        url = url.replace(parsed.scheme + "://", "postgresql+pool://", 1)
    elif scheme in ("cockroachdb", "crdb"):
        import playhouse.cockroachdb

        url = url.replace(parsed.scheme + "://", "cockroachdb+pool://", 1)
    elif scheme.endswith("+pool"):
        if scheme.startswith(("cockroachdb", "crdb")):
            import playhouse.cockroachdb  # noqa: F401
    else:
        raise ValueError(f"unsupported database URL scheme {parsed.scheme!r}")
    given = parse_qs(parsed.query)
    libpq = {k: v for k, v in POSTGRES_CONNECT_DEFAULTS.items() if k not in given}
    db = db_url.connect(
        url,
        max_connections=pool_size,
        stale_timeout=300,
        timeout=pool_timeout,
        **libpq,
    )
    if isinstance(db, PooledDatabase) and isinstance(db, peewee.PostgresqlDatabase):
        db.__class__ = _without_checkout_round_trip(type(db))
    return db


# -- pooled PostgreSQL: no round trip on check-out ----------------------------------------------


def _server_hung_up(conn: Any) -> bool:
    """True if an idle connection's socket is readable: an idle PostgreSQL session receives
    nothing unless the server is closing it (shutdown, crash, idle timeout, terminate)."""
    try:
        fd = conn.fileno()
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        readable, _, _ = select.select([fd], [], [], 0)  # Windows: no poll()
        return bool(readable)
    except (OSError, ValueError):
        return True


class _CheckoutWithoutRoundTrip:
    """Mixin for peewee's pooled PostgreSQL classes.

    peewee checks every idle connection it hands out with a ``SELECT 1`` round trip: one
    extra query per request (measured: the PostgreSQL row of docs/PERFORMANCE.md). Instead,
    an idle connection whose socket has nothing to read is taken as alive; one the server
    closed is discarded as before. A connection that dies silently (the server's host
    vanishes) fails on its first query instead: a 503 that drops it (``release_connection``),
    the same answer the ping's own time-out would have given.
    """

    def _is_closed(self, conn: Any) -> bool:
        if conn.closed:
            return True
        adapter = self._adapter  # type: ignore[attr-defined]
        if adapter.txn_status(conn) != adapter.txn_idle:
            return super()._is_closed(conn)  # type: ignore[misc]  # rolls back, or discards
        return _server_hung_up(conn)


_FAST_POOL_CLASSES: dict[type, type] = {}


def _without_checkout_round_trip(cls: type) -> type:
    fast = _FAST_POOL_CLASSES.get(cls)
    if fast is None:
        fast = type(cls.__name__, (_CheckoutWithoutRoundTrip, cls), {"__module__": __name__})
        _FAST_POOL_CLASSES[cls] = fast
    return fast


def is_pooled(db: peewee.Database) -> bool:
    return isinstance(db, PooledDatabase)


def is_postgres(db: peewee.Database) -> bool:
    return isinstance(db, peewee.PostgresqlDatabase)


def is_cockroach(db: peewee.Database) -> bool:
    return type(db).__name__.startswith(("CockroachDatabase", "PooledCockroach"))


def release_connection(db: peewee.Database, broken: bool = False) -> None:
    """Give a pooled connection back (or drop it if ``broken``). SQLite keeps its own."""
    if is_pooled(db):
        try:
            if broken:
                db.manual_close()
            elif not db.is_closed():
                db.close()
        except Exception:  # a connection to a dead server: forget it
            log.debug("closing a database connection failed", exc_info=True)
    elif broken and not db.is_closed():
        try:
            db.close()
        except Exception:
            log.debug("closing a database connection failed", exc_info=True)


def run_transaction(db: peewee.Database, fn: Callable[[], object], retries: int = 5) -> object:
    """Run ``fn`` in a transaction, retrying serialisation failures (CockroachDB)."""
    if is_cockroach(db):
        return db.run_transaction(lambda _db: fn(), max_attempts=retries)
    with db.atomic():
        return fn()
