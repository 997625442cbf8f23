"""Database: one proxy every plugin's models bind to, URL-selected backends, prepared
queries, tracked migrations.

- :mod:`.connect`: :class:`BaseModel`, the routed ``database`` proxy (each query goes to the
  database of the gateway handling the current request, so several gateways live in one
  process), opening a URL, pooling, releasing connections;
- :mod:`.prepared`: :class:`Prepared` queries with :class:`Param` placeholders;
- :mod:`.migrations`: :class:`Migration`, :func:`create_tables`, the history table, ``migrate``.

Import from here: ``from gateway_kernel.db import BaseModel, Prepared, utcnow``.
"""

from .connect import (
    DATABASE_DOWN_ERRORS,
    POSTGRES_CONNECT_DEFAULTS,
    SQLITE_PRAGMAS,
    BaseModel,
    RoutedDatabaseProxy,
    activate,
    database,
    deactivate,
    default_database_url,
    is_cockroach,
    is_pooled,
    is_postgres,
    open_database,
    release_connection,
    run_transaction,
    utcnow,
)
from .migrations import Migration, MigrationRecord, create_tables, migrate
from .prepared import Param, Prepared

__all__ = [
    "DATABASE_DOWN_ERRORS",
    "POSTGRES_CONNECT_DEFAULTS",
    "SQLITE_PRAGMAS",
    "BaseModel",
    "Migration",
    "MigrationRecord",
    "Param",
    "Prepared",
    "RoutedDatabaseProxy",
    "activate",
    "create_tables",
    "database",
    "deactivate",
    "default_database_url",
    "is_cockroach",
    "is_pooled",
    "is_postgres",
    "migrate",
    "open_database",
    "release_connection",
    "run_transaction",
    "utcnow",
]
