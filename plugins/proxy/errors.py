"""Every error the proxy answers (API.md, "Proxy"): its codes as constants, with the helpers
that build them (``raise errors.engine_busy()``), so status, code, message and Retry-After of
one failure are written once for both servers.

A failure the proxy answers itself is a :class:`~gateway_kernel.errors.GatewayError`; every
other answer is the engine's, passed through. :class:`UpstreamAborted` is the one failure after
the answer started: the server then drops the connection instead.
"""

from __future__ import annotations

from gateway_kernel.errors import GatewayError, bad_request, not_found, unavailable
from gateway_kernel.http import body_too_large

from . import hookspecs

# -- the proxy's own codes -------------------------------------------------------------------
ENGINE_OFFLINE = hookspecs.ENGINE_OFFLINE
ENGINE_UNREACHABLE = "engine_unreachable"  # 502: refused, reset, unusable URL
ENGINE_TIMEOUT = "engine_timeout"  # 504: no answer in time (or our own pool exhausted)
ENGINE_UNAVAILABLE = "engine_unavailable"  # 503: short-circuited by the breaker
ENGINE_BUSY = "engine_busy"  # 503: too many requests in flight (fairness bounds)
NO_PUBLIC_ENGINE = "no_public_engine"  # 503: FLOWORK_PUBLIC_ENGINE_URL unset
PROXY_LOOP = "proxy_loop"  # 508: the request already passed through a Flowork gateway
# -- the kernel's codes the proxy answers too ------------------------------------------------
NOT_FOUND = "not_found"  # 404: a path with dot segments (the engine resolver's 404s too)
BODY_TOO_LARGE = "body_too_large"  # 413: over FLOWORK_PROXY_MAX_UPLOAD_BYTES
INVALID_BODY = "invalid_body"  # 400: the client's body ended before its Content-Length

#: Retry-After of ``engine_offline``: a heartbeat or a socket sign-in may bring one back.
OFFLINE_RETRY_AFTER_S = 5
#: Retry-After of ``engine_busy`` and of a ``engine_timeout`` from our own exhausted pool.
BUSY_RETRY_AFTER_S = 1


class UpstreamAborted(Exception):
    """The engine's body broke off after the response started; the server drops the
    connection so the client sees a truncated answer, not a complete-looking one."""


def engine_offline() -> GatewayError:
    """No resolver named an online engine (the hook's own answer when it has none)."""
    return hookspecs.engine_offline(OFFLINE_RETRY_AFTER_S)


def engine_unreachable() -> GatewayError:
    return GatewayError(502, ENGINE_UNREACHABLE, "The engine could not be reached")


def engine_timeout() -> GatewayError:
    return GatewayError(504, ENGINE_TIMEOUT, "The engine did not answer in time")


def pool_exhausted() -> GatewayError:
    """Our own connection pool had no connection in time: not the engine's fault (the
    breaker is not fed), and worth a retry shortly."""
    return GatewayError(504, ENGINE_TIMEOUT, "The engine did not answer in time",
                        {"Retry-After": str(BUSY_RETRY_AFTER_S)})


def engine_unavailable(retry_after: int) -> GatewayError:
    return unavailable("The engine failed repeatedly; retry after the cool-down",
                       code=ENGINE_UNAVAILABLE, retry_after=retry_after)


def engine_busy() -> GatewayError:
    return unavailable("Too many requests in flight to this engine; retry shortly",
                       code=ENGINE_BUSY, retry_after=BUSY_RETRY_AFTER_S)


def no_public_engine() -> GatewayError:
    return unavailable("No public engine is configured", code=NO_PUBLIC_ENGINE)


def proxy_loop() -> GatewayError:
    return GatewayError(508, PROXY_LOOP, "The request looped back to the gateway")


def no_such_path() -> GatewayError:
    return not_found("No such path", code=NOT_FOUND)


def upload_too_large(limit: int) -> GatewayError:
    return body_too_large(limit)


def body_incomplete(message: str) -> GatewayError:
    return bad_request(message, code=INVALID_BODY)
