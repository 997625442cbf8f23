"""Error codes of the ratelimit plugin."""

from __future__ import annotations

from gateway_kernel.errors import GatewayError

RATE_LIMITED = "rate_limited"


def rate_limited(limit: str, retry_after: int, headers: dict[str, str]) -> GatewayError:
    return GatewayError(429, RATE_LIMITED, f"Rate limit exceeded ({limit}); retry later",
                        {**headers, "Retry-After": str(retry_after)})
