"""Per-engine circuit breaker: after N consecutive transport failures an engine is
short-circuited for a cool-down, so a dead engine costs its users one fast 503 instead of a
connect timeout each, and never slows down requests to other engines."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable


class CircuitBreaker:
    """Failure counts per key (an engine and its URL), bounded to ``max_keys`` entries.

    Closed → (``threshold`` consecutive failures) → open for ``cooldown_s`` → half-open: requests
    pass again; the next failure re-opens it at once, a success closes it.
    """

    def __init__(self, threshold: int, cooldown_s: float, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        # key -> [consecutive failures, open until (clock value, 0 = not open)]
        self._state: dict[Hashable, list[float]] = {}

    def retry_after(self, key: Hashable) -> int | None:
        """Seconds until ``key`` may be tried again, or None when requests may pass."""
        state = self._state.get(key)  # lock-free read: a stale answer is harmless
        if state is None or state[1] == 0:
            return None
        left = state[1] - self.clock()
        return math.ceil(left) if left > 0 else None

    def open_count(self) -> int:
        """Keys short-circuited right now (for the metrics)."""
        now = self.clock()
        return sum(1 for state in list(self._state.values()) if state[1] > now)

    def success(self, key: Hashable) -> None:
        if key in self._state:
            with self._lock:
                self._state.pop(key, None)

    def failure(self, key: Hashable) -> None:
        with self._lock:
            state = self._state.pop(key, None) or [0, 0]
            state[0] += 1
            if state[0] >= self.threshold:
                state[1] = self.clock() + self.cooldown_s
            self._state[key] = state  # re-inserted last: the dict's order is recency
            while len(self._state) > self.max_keys:
                del self._state[next(iter(self._state))]
