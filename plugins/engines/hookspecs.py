"""The engines plugin's contract with the plugins that require it (sharing, realtime).

- Who else may use an engine: engines knows owners only and asks whoever shares engines (the
  sharing plugin answers; with no such plugin enabled, engines are their owner's alone).
- Realtime presence: the realtime plugin asks engines (and sharing) for statuses and socket
  leases, and hears the change events engines and sharing emit after a commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from gateway_kernel.api import PROJECT

if TYPE_CHECKING:
    from gateway_kernel.accounts import Account

hookspec = pluggy.HookspecMarker(PROJECT)


class EngineGuest(NamedTuple):
    """A user an engine is shared with, and the share's role."""

    account: Account
    role: str


@hookspec
def flowork_engine_guests(engine_id: str) -> list[EngineGuest]:
    """Users, other than the owner, who may use ``engine_id`` (sharing contributes these).
    Engines lists them in the engine's auth info (``GET /engine/get-engine-auth-info``)."""


@hookspec(firstresult=True)
def flowork_engine_guest_role(engine_id: str, account_id: int) -> str | None:
    """*firstresult*. The role of ``account_id`` on someone else's ``engine_id``, or None.
    Engines asks it when a user names an engine they do not own."""


@hookspec
def flowork_engines_shared_with(account_id: int) -> list[str]:
    """Ids of engines other users shared with ``account_id``."""


# --- realtime presence and change events ------------------------------------------------------
# The realtime plugin requires engines and sharing, so engines declares this contract: realtime
# calls the presence hooks (engines answers, sharing adds shared engines' statuses) and hears
# the events engines and sharing emit after a commit.


class EngineStatus(NamedTuple):
    """An engine as the GUI's status pushes show it (``flowork_engine_statuses``)."""

    engine_id: str
    name: str
    owner_account_id: int
    online: bool
    last_seen: Any  # naive-UTC datetime or None
    #: True while a realtime socket holds the engine (its lease has not lapsed).
    socket_online: bool = False


@hookspec
def flowork_engine_statuses(account_id: int) -> list[EngineStatus]:
    """Engines ``account_id`` may see, with presence: the engines plugin answers the owned
    ones, the sharing plugin the ones shared with the account. Realtime merges every list for
    ``initial_engine_statuses`` and picks a GUI's default engine from it."""


@hookspec(firstresult=True)
def flowork_engine_status(engine_id: str) -> EngineStatus | None:
    """*firstresult*. One engine's status (owner and presence), or None if it does not exist.
    Realtime uses it to check a GUI command's target and to build status pushes."""


@hookspec(firstresult=True)
def flowork_engine_socket_lease(engine_ids: list[str], holder: str, until: Any,
                                take_over: bool) -> list[str]:
    """*firstresult*. A realtime socket holds these engines: mark them online until ``until``
    (naive UTC) on behalf of ``holder`` (one gateway instance). ``take_over`` (a new socket)
    makes ``holder`` the holder whoever held them before; otherwise (the periodic renewal)
    only leases this holder holds, or that have lapsed, are extended. Returns the ids leased
    (a deleted engine is missing). A lease that is not renewed lapses, so an instance that
    dies holding sockets leaves nothing online for longer than one lease."""


@hookspec(firstresult=True)
def flowork_engine_socket_release(engine_id: str, holder: str, url: str | None) -> bool:
    """*firstresult*. ``holder``'s last socket of ``engine_id`` closed: offline at once if
    ``holder`` still holds the lease (another instance may have taken it over), and the stored
    URL cleared if it is ``url`` (the one the socket registered). True if it went offline."""


@hookspec(firstresult=True)
def flowork_engine_lapsed_leases() -> list[str]:
    """*firstresult*. Engines whose socket lease lapsed without a release (the instance holding
    the socket died), each returned once to exactly one caller, which announces them offline.
    Every instance's realtime plugin calls it once per renewal period."""


@hookspec(firstresult=True)
def flowork_engine_register_url(engine_id: str, url: str) -> str:
    """*firstresult*. Store the URL an engine reported over its socket, under the same policy
    as the heartbeat's ``url``; returns the stored (normalised) URL. Raises ``ValueError``
    (with a reason safe to log) when the URL is refused."""


@hookspec
def flowork_engine_shares_changed(engine_id: str, account_id: int, change: str) -> None:
    """Event, after commit: the share of ``engine_id`` with ``account_id`` was ``created``,
    ``role_changed`` or ``revoked`` (seed and alias routes alike). Sharing calls it; realtime
    tells the engine to re-read its auth list and the guest about the new or removed engine.
    Called from request threads: implementations must not block."""


@hookspec
def flowork_engine_credentials_revoked(engine_id: str, owner_account_id: int,
                                       deleted: bool) -> None:
    """Event, after commit: ``engine_id``'s token was reset, or the engine ``deleted``. Realtime
    refuses and closes the engine's open sockets and, on delete, tells the owner's GUIs
    (``engine_deleted``). Must not block."""
