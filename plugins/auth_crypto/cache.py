"""A small bounded, thread-safe expiring map (one per gateway instance)."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class ExpiringCache(Generic[V]):
    """At most ``max_entries`` values, each dropped at its own expiry time (0: none).

    Reads take no lock (a dict lookup is atomic in CPython); writes do. When full, the
    oldest insertion is evicted: simple and O(1), good enough for a cache whose entries
    all expire within minutes.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, now: float) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if now >= item[0]:
            self.discard(key)
            return None
        return item[1]

    def put(self, key: Hashable, value: V, expires: float) -> None:
        if self.max_entries <= 0:  # a disabled cache keeps nothing
            return
        with self._lock:
            self._data.pop(key, None)
            while len(self._data) >= self.max_entries:
                self._data.pop(next(iter(self._data)))
            self._data[key] = (expires, value)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
