"""Failed-authentication throttle: per client address, a fixed window of failures.

Once an address has failed ``limit`` times inside a window that began at its first failure,
every further authentication attempt from it is 429 ``too_many_requests`` (``Retry-After``:
the seconds until the window ends), before any credential is checked, so guessing stops
paying off whatever the guess. Successful requests never count.

Two stores: in memory (one instance), or Redis (``FLOWORK_REDIS_URL``), where the counters
are shared by every instance. With Redis, an instance asks Redis only about addresses it has
itself seen fail within the window, so clients that never fail cost no round trip; an
address failing elsewhere is refused here from its first failure here on (one more attempt
per instance at most).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .errors import GatewayError

log = logging.getLogger("gateway_kernel.auth")

#: Addresses one instance keeps counters for; beyond it, expired entries are dropped first,
#: then the oldest (an attacker with many addresses cannot grow memory without bound).
MAX_TRACKED = 100_000
#: X-Forwarded-For entries looked at (from the right) to find the client behind proxies.
MAX_FORWARDED_HOPS = 16

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def too_many_failures(retry_after: float) -> GatewayError:
    seconds = max(1, math.ceil(retry_after))
    return GatewayError(
        429, "too_many_requests",
        f"Too many failed authentication attempts from this address; retry in {seconds} s",
        {"Retry-After": str(seconds)},
    )


class FailureStore(Protocol):
    def blocked_for(self, client: str, now: float) -> float:
        """Seconds this client is still refused (0: not refused)."""

    def record(self, client: str, now: float) -> None:
        """Count one failure of ``client``."""


class MemoryStore:
    """Counters in this process: client → [window end (monotonic s), failures]."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._windows: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked_for(self, client: str, now: float) -> float:
        entry = self._windows.get(client)
        if entry is None or entry[1] < self.limit or now >= entry[0]:
            return 0.0
        return entry[0] - now

    def record(self, client: str, now: float) -> None:
        with self._lock:
            entry = self._windows.get(client)
            if entry is None or now >= entry[0]:
                if entry is None and len(self._windows) >= MAX_TRACKED:
                    self._prune(now)
                self._windows[client] = [now + self.window_s, 1]
            else:
                entry[1] += 1

    def _prune(self, now: float) -> None:
        for key in [k for k, (end, _) in self._windows.items() if now >= end]:
            del self._windows[key]
        while len(self._windows) >= MAX_TRACKED:
            del self._windows[next(iter(self._windows))]


class RedisStore:
    """Counters in Redis (``<prefix><client>`` → failures, expiring with the window), shared by
    every instance; a local note of recently failing clients decides when to ask Redis."""

    def __init__(self, client: Any, limit: int, window_s: float,
                 prefix: str = "flowork:authfail:") -> None:
        self.redis = client
        self.limit = limit
        self.window_ms = max(1, int(window_s * 1000))
        self.prefix = prefix
        self.local = MemoryStore(1, window_s)  # "failed here lately": one failure is enough

    def blocked_for(self, client: str, now: float) -> float:
        if not self.local.blocked_for(client, now):
            return 0.0
        pipe = self.redis.pipeline(transaction=False)
        key = self.prefix + client
        pipe.get(key)
        pipe.pttl(key)
        count, ttl_ms = pipe.execute()
        if count is None or int(count) < self.limit or ttl_ms is None or ttl_ms <= 0:
            return 0.0
        return ttl_ms / 1000

    def record(self, client: str, now: float) -> None:
        self.local.record(client, now)
        key = self.prefix + client
        pipe = self.redis.pipeline(transaction=True)
        # The window starts at the first failure: a new key is created with the window as
        # its expiry (SET NX PX), and INCR keeps that expiry.
        pipe.set(key, 0, nx=True, px=self.window_ms)
        pipe.incr(key)
        pipe.execute()


class AuthThrottle:
    """What Gateway.authenticate calls: ``check`` before the schemes, ``failed`` after a 401."""

    def __init__(self, store: FailureStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock

    def check(self, client: str) -> None:
        """Raise 429 if ``client`` is throttled. A store that is down does not lock anyone
        out: the request goes on to normal authentication."""
        try:
            wait = self.store.blocked_for(client, self.clock())
        except Exception as exc:  # Redis unreachable: fail open, say so
            log.warning("auth throttle store unavailable: %s", type(exc).__name__)
            return
        if wait > 0:
            raise too_many_failures(wait)

    def failed(self, client: str) -> None:
        """Count one failed authentication of ``client``."""
        try:
            self.store.record(client, self.clock())
        except Exception as exc:
            log.warning("auth throttle store unavailable: %s", type(exc).__name__)


def client_address(req: Any, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the TCP peer, or, when the peer is a trusted proxy (a load
    balancer), the nearest address in X-Forwarded-For that is not itself a trusted proxy.
    Without trusted proxies every client behind a balancer would share one throttle."""
    peer = req.remote_addr or "-"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    forwarded = req.get_header("X-Forwarded-For")
    if not forwarded:
        return peer
    hops = [hop.strip() for hop in forwarded.split(",")[-MAX_FORWARDED_HOPS:]]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop if _is_ip(hop) else peer
    return hops[0] if _is_ip(hops[0]) else peer


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(value: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def log_auth_failure(scheme: str, code: str, client: str, path: str) -> None:
    """One warning line per refused credential; never the credential itself."""
    log.warning("authentication failed: scheme=%s code=%s client=%s path=%r",
                scheme, code, client, path[:200])


def build_throttle(limit: int, window_s: float, redis_url: str | None) -> AuthThrottle | None:
    """The throttle for the kernel's settings; None when ``limit`` is 0 (disabled)."""
    if limit <= 0:
        return None
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        return AuthThrottle(RedisStore(client, limit, window_s))
    return AuthThrottle(MemoryStore(limit, window_s))
