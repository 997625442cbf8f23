"""The ratelimit plugin's OpenAPI part: no routes of its own; the 429 it may answer on every
operation (merged through ``gateway_openapi_common_errors``)."""

from __future__ import annotations

from .errors import RATE_LIMITED


def common_errors() -> dict[int, list[str]]:
    return {429: [RATE_LIMITED]}
