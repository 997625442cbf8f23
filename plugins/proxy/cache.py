"""A small shared cache for the public proxies (RFC 9111, the parts that matter here).

Stored: ``200`` answers to ``GET`` with ``Cache-Control: max-age`` (or ``s-maxage``) > 0, no
``no-store``/``private``/``no-cache``, no ``Set-Cookie``, and no ``Vary`` other than
``Accept-Encoding`` (which is part of the key). No heuristic freshness: an answer without
max-age is not stored. Bounded by total bytes, least recently used first out.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CacheKey = tuple[str, str, str]  # (path, query string, Accept-Encoding)


@dataclass(frozen=True)
class CachedResponse:
    status: int
    #: Response headers after hygiene, lowercase names, Content-Length excluded.
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    expires_at: float
    #: The ``Age`` the engine reported when it was stored.
    initial_age: int

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) for n, v in self.headers) + 64

    def age(self, now: float) -> int:
        return self.initial_age + int(now - self.stored_at)


def _directives(values: Iterable[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            name, _, arg = part.strip().partition("=")
            if name:
                result[name.strip().lower()] = arg.strip().strip('"')
    return result


def _seconds(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    return int(text)


def freshness(status: int, headers: Iterable[tuple[str, str]]) -> tuple[int, int] | None:
    """(lifetime, age) in seconds if a response with these headers (lowercase names) may be
    stored, else None."""
    if status != 200:
        return None
    cache_control: list[str] = []
    vary: list[str] = []
    age = 0
    for name, value in headers:
        if name == "cache-control":
            cache_control.append(value)
        elif name == "vary":
            vary.extend(v.strip().lower() for v in value.split(",") if v.strip())
        elif name == "set-cookie":
            return None
        elif name == "age":
            age = _seconds(value.strip()) or 0
    if any(v != "accept-encoding" for v in vary):
        return None
    directives = _directives(cache_control)
    if {"no-store", "private", "no-cache"} & directives.keys():
        return None
    lifetime = _seconds(directives.get("s-maxage"))
    if lifetime is None:
        lifetime = _seconds(directives.get("max-age"))
    if not lifetime or lifetime <= age:
        return None
    return lifetime, age


class ResponseCache:
    """Thread-safe LRU of :class:`CachedResponse`, at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int, max_entry_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.clock = clock
        self._entries: OrderedDict[CacheKey, CachedResponse] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> CachedResponse | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires_at <= self.clock():
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            return entry

    def store(self, key: CacheKey, status: int, headers: Iterable[tuple[str, str]],
              body: bytes, lifetime: int, age: int) -> None:
        now = self.clock()
        entry = CachedResponse(status, tuple(headers), body, now, now + lifetime - age, age)
        if entry.size > self.max_entry_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._remove(key)
            self._entries[key] = entry
            self._bytes += entry.size
            while self._bytes > self.max_bytes:
                self._remove(next(iter(self._entries)))

    def _remove(self, key: CacheKey) -> None:
        self._bytes -= self._entries.pop(key).size
