"""The kill switch's table, and the three operations on it (routes and CLI share them).

Moved out of the engines plugin (issue 15), the table keeps its name and its data:

- The table is still ``engines_disabled_component``: renaming it would need a copy step, and
  the name is only a name. The kernel's ownership check is by table, not by prefix: this
  plugin's ``gateway_models`` is the one owner; engines no longer lists the model.
- Databases made before the move have the table from engines' ``0001_initial`` (recorded in
  ``gateway_migration_history`` under ``engines``). This plugin's own ``0001_initial`` is a
  ``create_tables`` step, which creates tables and indexes *if they do not exist*: on such a
  database it finds the table (same columns, same index names, since peewee derives them from
  the table name) and only records itself, leaving every row in place; on a fresh database it
  creates the table. engines' ``0001_initial`` keeps its name and now creates only engines'
  own tables, so a fresh database gets each table exactly once.
- Later changes to this table are this plugin's migrations, appended after ``0001_initial``.

tests/kernel/test_migrations_upgrade.py builds a database the way the previous version did and
checks that its kill-switch rows survive the upgrade and are served.
"""

from __future__ import annotations

import peewee

from gateway_kernel import BaseModel, create_tables, utcnow

REASON_MAX = 500


class DisabledComponent(BaseModel):
    """A component id the engines must not run, and why."""

    component_id = peewee.CharField(primary_key=True, max_length=128)
    reason = peewee.CharField(max_length=REASON_MAX, default="")
    disabled_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "engines_disabled_component"  # its name under engines; kept (see above)


MODELS: list[type[BaseModel]] = [DisabledComponent]
MIGRATIONS = [create_tables("0001_initial", DisabledComponent)]


def disabled_ids() -> list[str]:
    query = DisabledComponent.select(DisabledComponent.component_id).order_by(
        DisabledComponent.component_id
    )
    return [row[0] for row in query.tuples()]


def disable(component_id: str, reason: str) -> DisabledComponent:
    """Disable (or update the reason of) a component; ``disabled_at`` keeps the first time.

    One transaction: the upsert locks the row, so a concurrent enable (DELETE) cannot remove
    it before it is read back."""
    with DisabledComponent._meta.database.atomic():
        DisabledComponent.insert(
            component_id=component_id, reason=reason, disabled_at=utcnow()
        ).on_conflict(
            conflict_target=[DisabledComponent.component_id],
            update={DisabledComponent.reason: reason},
        ).execute()
        return DisabledComponent.get_by_id(component_id)


def enable(component_id: str) -> bool:
    """Re-enable a component; False if it was not disabled."""
    return bool(
        DisabledComponent.delete().where(DisabledComponent.component_id == component_id).execute()
    )
