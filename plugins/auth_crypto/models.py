"""Tables of auth_crypto: the per-user logout cut-off and spent (exposed) signatures."""

from __future__ import annotations

import peewee

from gateway_kernel import Account, BaseModel, Migration, create_tables, utcnow


class Revocation(BaseModel):
    """Messages of ``account`` issued at or before ``revoked_before`` (naive UTC) are refused."""

    account = peewee.ForeignKeyField(Account, primary_key=True, on_delete="CASCADE")
    revoked_before = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "auth_crypto_revocation"


class SpentSignature(BaseModel):
    """A signed message that was shown to a third party (a guest's request proxied to another
    owner's engine): until it expires it is accepted only toward ``audience``.

    Keyed by a digest of (address, message), not of the signature text: the same message
    signed again, or the signature's malleable twins, are the same credential."""

    digest = peewee.FixedCharField(max_length=64, primary_key=True)
    audience = peewee.CharField(max_length=100)
    expires_at = peewee.DateTimeField(index=True)

    class Meta:
        table_name = "auth_crypto_spent_signature"


MIGRATIONS: list[Migration] = [
    create_tables("0001_revocation", Revocation),
    create_tables("0002_spent_signature", SpentSignature),
]
