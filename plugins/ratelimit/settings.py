"""Settings of the ratelimit plugin: the rules and where counters live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import limits

from gateway_kernel import ConfigError, Setting
from gateway_kernel.config import Config, as_str

#: What a rule counts by: the authenticated principal, or the client's network address.
KEYS = ("principal", "address")


@dataclass(frozen=True)
class Rule:
    """``group:key=limit``: requests of route group ``group`` (the owning plugin's name, or
    ``*`` for all) counted per ``key``, at most ``limit`` (``limits`` notation: 100/minute)."""

    group: str
    key: str
    item: limits.RateLimitItem
    text: str


def as_rules(value: Any) -> tuple[Rule, ...]:
    """``proxy:principal=120/minute; *:address=600/minute`` → rules (';' or ',' separated)."""
    if isinstance(value, (list, tuple)):
        value = ";".join(str(v) for v in value)
    rules = []
    for part in str(value).replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        scope, sep, limit = part.partition("=")
        group, colon, key = scope.strip().partition(":")
        if not sep or not colon or not group.strip() or key.strip() not in KEYS:
            raise ValueError(f"rule {part!r}: expected group:principal=N/period or "
                             f"group:address=N/period (group: a plugin name or *)")
        try:
            item = limits.parse(limit.strip())
        except ValueError:
            raise ValueError(f"rule {part!r}: {limit.strip()!r} is not a limit like "
                             f"100/minute") from None
        rules.append(Rule(group.strip(), key.strip(), item, limit.strip()))
    return tuple(rules)


SETTINGS = (
    Setting("FLOWORK_RATE_LIMITS", as_rules, (),
            "request limits, 'group:principal=N/period' or 'group:address=N/period' separated "
            "by ';' (group: the owning plugin's name or *; default: none)"),
    Setting("FLOWORK_RATE_LIMIT_KEY_PREFIX", as_str, "flowork-ratelimit",
            "prefix of the rate-limit counters' keys in Redis"),
)


@dataclass(frozen=True)
class RateLimitConfig:
    rules: tuple[Rule, ...]
    redis_url: str | None
    key_prefix: str

    @classmethod
    def from_config(cls, config: Config, groups: set[str]) -> RateLimitConfig:
        """The settings, every rule's group checked against ``groups`` (the route groups:
        ``kernel``, ``*`` and the enabled plugins' names)."""
        cfg = cls(
            rules=config["FLOWORK_RATE_LIMITS"],
            redis_url=config["FLOWORK_REDIS_URL"] or None,
            key_prefix=config["FLOWORK_RATE_LIMIT_KEY_PREFIX"],
        )
        unknown = sorted({r.group for r in cfg.rules} - groups)
        if unknown:
            raise ConfigError(f"FLOWORK_RATE_LIMITS: unknown route group(s) {unknown}; "
                              f"groups are plugin names ({', '.join(sorted(groups))})")
        return cfg
