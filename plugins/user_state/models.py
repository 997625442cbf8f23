"""The user_state table.

It belonged to the engines plugin until issue 15 and keeps its name, ``engines_user_state``,
so existing rows stay where they are. On a database made before the move, this plugin's
``0001_initial`` (``create_tables``: create if not exists) finds the table that engines'
``0001_initial`` created and only records itself; on a fresh database it creates it. The kill
switch moved the same way; :mod:`gateway_plugins.killswitch.models` explains it in full.
"""

from __future__ import annotations

import peewee

from gateway_kernel import Account, BaseModel, create_tables, utcnow


class UserState(BaseModel):
    """One JSON value per (account, key), stored as canonical JSON text."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="states", on_delete="CASCADE")
    key = peewee.CharField(max_length=64)
    value = peewee.TextField()
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "engines_user_state"  # its name under engines; kept (see above)
        indexes = ((("account", "key"), True),)


MODELS: list[type[BaseModel]] = [UserState]
MIGRATIONS = [create_tables("0001_initial", UserState)]
