"""Fairness: bounds on concurrent proxied requests per engine and per user (API.md, "Proxy").

A slow or stalled engine can hold at most ``per_engine`` exchanges, and one user at most
``per_user``, so neither can take the gateway's capacity from everyone else; beyond a bound
the answer is 503 ``engine_busy``. Counts are per gateway instance (in memory).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable


class Slot:
    """One admitted exchange; :meth:`release` (idempotent) gives its places back."""

    __slots__ = ("_engine", "_limits", "_user")

    def __init__(self, limits: ConcurrencyLimits, engine: Hashable, user: Hashable | None) -> None:
        self._limits: ConcurrencyLimits | None = limits
        self._engine = engine
        self._user = user

    def release(self) -> None:
        limits, self._limits = self._limits, None
        if limits is not None:
            limits._release(self._engine, self._user)


class ConcurrencyLimits:
    """Counters of in-flight exchanges. Safe from threads and from the event loop (the lock
    is only ever held for a few dictionary operations)."""

    def __init__(self, per_engine: int, per_user: int) -> None:
        self.per_engine = per_engine
        self.per_user = per_user
        self._lock = threading.Lock()
        self._engines: dict[Hashable, int] = {}
        self._users: dict[Hashable, int] = {}

    def acquire(self, engine: Hashable, user: Hashable | None) -> Slot | None:
        """A slot for one exchange with ``engine`` on behalf of ``user`` (None: anonymous,
        bounded per engine only), or None when either bound is reached."""
        with self._lock:
            engine_count = self._engines.get(engine, 0)
            if engine_count >= self.per_engine:
                return None
            if user is not None:
                user_count = self._users.get(user, 0)
                if user_count >= self.per_user:
                    return None
                self._users[user] = user_count + 1
            self._engines[engine] = engine_count + 1
        return Slot(self, engine, user)

    def in_flight(self, engine: Hashable) -> int:
        return self._engines.get(engine, 0)

    def _release(self, engine: Hashable, user: Hashable | None) -> None:
        with self._lock:
            # Entries at zero are dropped, so the maps hold only what is in flight.
            count = self._engines.get(engine, 0) - 1
            if count > 0:
                self._engines[engine] = count
            else:
                self._engines.pop(engine, None)
            if user is not None:
                count = self._users.get(user, 0) - 1
                if count > 0:
                    self._users[user] = count
                else:
                    self._users.pop(user, None)
