"""The queries behind the hooks sharing answers for engines and realtime (``flowork_engine_*``).

The proxy and get-engine-auth-info ask these on every request, hence ``Prepared`` (why:
:class:`gateway_kernel.db.Prepared`); every call still reads the table, so a revoked share
takes effect at once.
"""

from __future__ import annotations

from gateway_kernel import Account, Param, Prepared, utcnow
from gateway_plugins.engines.api import STATUS_COLUMNS, Engine, EngineGuest, EngineStatus, Presence

from .models import EngineShare

GUESTS_OF_ENGINE = Prepared(lambda: (
    EngineShare.select(EngineShare, Account)
    .join(Account)
    .where(EngineShare.engine == Param("engine_id"))
    .order_by(EngineShare.id)
))
GUEST_ROLE = Prepared(lambda: (
    EngineShare.select(EngineShare.role)
    .where((EngineShare.engine == Param("engine_id")) & (EngineShare.account == Param("account_id")))
    .limit(1)
    .tuples()
))
SHARED_WITH = Prepared(lambda: (
    EngineShare.select(EngineShare.engine).where(EngineShare.account == Param("account_id")).tuples()
))
SHARED_STATUSES = Prepared(lambda: (
    Engine.select(*STATUS_COLUMNS)
    .join(EngineShare, on=(EngineShare.engine == Engine.id))
    .where(EngineShare.account == Param("account_id"))
    .tuples()
))


def engine_guests(engine_id: str) -> list[EngineGuest]:
    return [EngineGuest(share.account, share.role)
            for share in GUESTS_OF_ENGINE.run(engine_id=engine_id)]


def engine_guest_role(engine_id: str, account_id: int) -> str | None:
    return GUEST_ROLE.scalar(engine_id=engine_id, account_id=account_id)


def engines_shared_with(account_id: int) -> list[str]:
    return [engine_id for (engine_id,) in SHARED_WITH.run(account_id=account_id)]


def shared_statuses(account_id: int, presence: Presence) -> list[EngineStatus]:
    """Presence of the engines shared with ``account_id`` (the engines plugin's rule)."""
    now = utcnow()
    return [presence.status_of(row, now) for row in SHARED_STATUSES.run(account_id=account_id)]
