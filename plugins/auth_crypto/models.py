"""Tables of auth_crypto: the per-user logout cut-off."""

from __future__ import annotations

import peewee

from gateway_kernel import Account, BaseModel, Migration, create_tables, utcnow


class Revocation(BaseModel):
    """Messages of ``account`` issued at or before ``revoked_before`` (naive UTC) are refused."""

    account = peewee.ForeignKeyField(Account, primary_key=True, on_delete="CASCADE")
    revoked_before = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "auth_crypto_revocation"


MIGRATIONS: list[Migration] = [create_tables("0001_revocation", Revocation)]
