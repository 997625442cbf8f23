"""The read queries that run on every engine request, hence ``Prepared`` (why:
:class:`gateway_kernel.db.Prepared`)."""

from __future__ import annotations

from gateway_kernel import Param, Prepared
from gateway_kernel.accounts import Account

from .models import Engine

_BY_DIGEST = Prepared(lambda: (
    Engine.select(Engine.id, Engine.owner).where(Engine.token_digest == Param("digest")).limit(1)
))
_OWNER_ADDRESS = Prepared(lambda: (
    Account.select(Account.address)
    .join(Engine, on=(Engine.owner == Account.id))
    .where(Engine.id == Param("engine_id"))
    .limit(1)
))


def engine_by_digest(digest: str) -> tuple[str, int] | None:
    """(engine id, owner account id) for a token digest: one unique-index lookup."""
    return _BY_DIGEST.cursor(digest=digest).fetchone()


def owner_address(engine_id: str) -> str | None:
    """The canonical (lowercase) address of the engine's owner."""
    return _OWNER_ADDRESS.scalar(engine_id=engine_id)
