"""Tracked migrations: each plugin's schema steps, applied once, recorded per plugin."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import peewee

from .connect import BaseModel, activate, deactivate, is_cockroach, is_postgres, utcnow

log = logging.getLogger("gateway_kernel.db")


@dataclass(frozen=True)
class Migration:
    """One schema step of one plugin; applied once, in list order, recorded by ``name``."""

    name: str
    apply: Callable[[peewee.Database], None]


def create_tables(name: str, *models: type[peewee.Model]) -> Migration:
    """The usual first migration: create these models' tables (and indexes)."""

    def apply(db: peewee.Database) -> None:
        db.create_tables(models, safe=True)

    return Migration(name, apply)


class MigrationRecord(BaseModel):
    plugin = peewee.CharField(max_length=100)
    name = peewee.CharField(max_length=200)
    applied_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "gateway_migration_history"
        indexes = ((("plugin", "name"), True),)


_MIGRATION_LOCK_KEY = 0x466C6F776F726B  # "Flowork": serialises concurrent instances


def migrate(db: peewee.Database, plan: Sequence[tuple[str, Iterable[Migration]]]) -> list[str]:
    """Apply pending migrations, plugin by plugin in ``plan`` order; return what was applied.

    Each migration runs in its own transaction together with its history row, so a failure
    leaves the database at the previous step. On PostgreSQL an advisory lock keeps two
    instances starting at once from racing.
    """
    token = activate(db)
    applied: list[str] = []
    try:
        with db.connection_context():
            locked = is_postgres(db) and not is_cockroach(db)
            if locked:
                # Before anything else: CREATE TABLE IF NOT EXISTS is not safe against a
                # concurrent CREATE on PostgreSQL (duplicate key in pg_type).
                db.execute_sql("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
            try:
                db.create_tables([MigrationRecord], safe=True)
                done = {(r.plugin, r.name) for r in MigrationRecord.select()}
                for plugin, migrations in plan:
                    for migration in migrations:
                        if (plugin, migration.name) in done:
                            continue
                        with db.atomic():
                            migration.apply(db)
                            MigrationRecord.create(plugin=plugin, name=migration.name)
                        applied.append(f"{plugin}:{migration.name}")
                        log.info("applied migration %s:%s", plugin, migration.name)
            finally:
                if locked:
                    db.execute_sql("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
    finally:
        deactivate(token)
    return applied
