"""Counting requests against the configured rules, with the ``limits`` library.

Counters are a sliding window (``limits``' sliding-window counter: two fixed windows
weighted, O(1) memory per key), in memory or, with FLOWORK_REDIS_URL, in Redis so that every
instance counts together. A Redis outage never takes the gateway down: requests are admitted
and the outage is logged (at most once a minute).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import falcon
import limits
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from gateway_kernel import Principal

from .errors import rate_limited
from .settings import RateLimitConfig, Rule

log = logging.getLogger("gateway_plugins.ratelimit")

_OUTAGE_LOG_EVERY_S = 60.0


def principal_key(principal: Principal | None) -> str | None:
    """Who is counted for ``principal``: the user's address, the engine, or the service."""
    if principal is None:
        return None
    if principal.account is not None:
        return f"user:{principal.account.address}"
    if principal.engine_id is not None:
        return f"engine:{principal.engine_id}"
    return principal.kind


class Limiter:
    def __init__(self, cfg: RateLimitConfig) -> None:
        self.rules = cfg.rules
        if cfg.redis_url:
            storage: MemoryStorage | RedisStorage = RedisStorage(
                cfg.redis_url, key_prefix=cfg.key_prefix, wrap_exceptions=True,
                socket_timeout=1, socket_connect_timeout=1)
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.strategy = SlidingWindowCounterRateLimiter(storage)
        self._by_group: dict[str, tuple[Rule, ...]] = {}
        self._next_outage_log = 0.0

    def rules_for(self, group: str) -> Sequence[Rule]:
        rules = self._by_group.get(group)
        if rules is None:
            rules = tuple(r for r in self.rules if r.group in (group, "*"))
            self._by_group[group] = rules
        return rules

    def admit(self, req: falcon.Request, resp: falcon.Response, principal: Principal | None,
              group: str, client: Callable[[falcon.Request], str]) -> None:
        """Count this request under every rule of its group; 429 when one is exhausted.

        The tightest rule's state is reported in the RateLimit-* headers."""
        rules = self.rules_for(group)
        if not rules:
            return
        tightest: tuple[int, int, Rule] | None = None  # (remaining, reset_s, rule)
        try:
            for rule in rules:
                who = principal_key(principal) if rule.key == "principal" else client(req)
                if who is None:
                    continue
                ids = (rule.group, rule.key, who)
                allowed = self.strategy.hit(rule.item, *ids)
                stats = self.strategy.get_window_stats(rule.item, *ids)
                reset_s = max(1, math.ceil(stats.reset_time - time.time()))
                if not allowed:
                    raise rate_limited(rule.text, reset_s, _headers(rule.item, 0, reset_s))
                if tightest is None or stats.remaining < tightest[0]:
                    tightest = (stats.remaining, reset_s, rule)
        except StorageError as exc:
            now = time.monotonic()
            if now >= self._next_outage_log:
                self._next_outage_log = now + _OUTAGE_LOG_EVERY_S
                log.warning("rate-limit storage unavailable, admitting requests: %s", exc)
            return
        if tightest is not None:
            remaining, reset_s, rule = tightest
            for name, value in _headers(rule.item, remaining, reset_s).items():
                resp.set_header(name, value)

    def close(self) -> None:
        close = getattr(self.storage, "storage", None)
        if close is not None and hasattr(close, "close"):
            close.close()


def _headers(item: limits.RateLimitItem, remaining: int, reset_s: int) -> dict[str, str]:
    return {"RateLimit-Limit": str(item.amount), "RateLimit-Remaining": str(max(0, remaining)),
            "RateLimit-Reset": str(reset_s)}
