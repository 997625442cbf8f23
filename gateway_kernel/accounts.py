"""The account (user) table, owned by the kernel the way Kong's core owns consumers.

Auth plugins turn credentials into accounts; other plugins reference ``Account`` by foreign
key. ``address`` is the scheme's canonical identity (for Ethereum: lowercase 0x address),
``public_address`` its display form (EIP-55 checksummed).
"""

from __future__ import annotations

from typing import Any

import peewee

from .db import BaseModel, Migration, create_tables, is_postgres, utcnow


class Account(BaseModel):
    id = peewee.AutoField()
    address = peewee.CharField(max_length=100, unique=True)
    public_address = peewee.CharField(max_length=100)
    username = peewee.CharField(max_length=100, index=True)
    email = peewee.CharField(max_length=255, default="")
    tier = peewee.CharField(max_length=50, default="")
    license_expires_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "gateway_account"


KERNEL_MIGRATIONS: list[Migration] = [create_tables("0001_account", Account)]


def ensure_account(address: str, defaults: dict[str, Any]) -> Account:
    """The account for canonical ``address``, created with ``defaults`` if new.

    Safe under concurrency: an INSERT … ON CONFLICT DO NOTHING followed by a SELECT, so
    simultaneous first requests of one address create exactly one row.
    """
    account = Account.get_or_none(Account.address == address)
    if account is not None:
        return account
    row = {"public_address": address, "username": address, **defaults, "address": address}
    Account.insert(**row).on_conflict_ignore().execute()
    return Account.get(Account.address == address)


def find_by_username(username: str) -> Account | None:
    """Case-insensitive username lookup."""
    if "\x00" in username:  # no stored name has one, and PostgreSQL refuses it in a query
        return None
    return (
        Account.select()
        .where(peewee.fn.LOWER(Account.username) == username.lower())
        .order_by(Account.id)
        .first()
    )


def lock_account(db: peewee.Database, account_id: int) -> None:
    """Serialise this account's writes until the transaction ends, so that a count taken next
    is exact (per-user limits): a row lock on PostgreSQL; SQLite's IMMEDIATE transaction
    already holds the database's write lock. Call inside ``db.atomic()``."""
    if is_postgres(db):
        Account.select(Account.id).where(Account.id == account_id).for_update().execute()
