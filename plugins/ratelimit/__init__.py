"""ratelimit: per-principal and per-client-address request limits (memory, or Redis)."""

from .plugin import RateLimitPlugin

__all__ = ["RateLimitPlugin"]
