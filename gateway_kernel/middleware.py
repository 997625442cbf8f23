"""What every request passes: request id, CORS and preflights, auth dispatch for routes,
connection release; the error handlers; the database health the kernel keeps.

The ASGI face (``gateway_kernel.asgi``) reuses :class:`KernelMiddleware`'s request part and
the same error handlers, so both servers answer alike.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

import falcon
import peewee

from .db import DATABASE_DOWN_ERRORS, release_connection
from .errors import GatewayError, handle_unexpected, serialize_error
from .observe import CONTEXT_KEY, REQUEST_ID, set_route

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("gateway_kernel")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Request ids: a random per-process prefix and a counter (32 hex digits, like uuid4().hex).
# Unique across instances and restarts, and no getrandom() system call per request: every
# system call releases the GIL, and under load each release costs thread switches.
_request_id_prefix = ""
_request_counter = itertools.count()


def _reseed_request_ids() -> None:
    global _request_id_prefix, _request_counter
    _request_id_prefix = os.urandom(8).hex()
    _request_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


_reseed_request_ids()
if hasattr(os, "register_at_fork"):  # a forked worker must not repeat its parent's ids
    os.register_at_fork(after_in_child=_reseed_request_ids)


def _new_request_id() -> str:
    return f"{_request_id_prefix}{next(_request_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


class DatabaseHealth:
    """Whether the gateway's database answers, as the health route reports it.

    A healthy answer is reused for :attr:`CACHE_S`, so load balancers polling every instance
    do not each cost a query; any request that meets a database error ends that at once
    (:meth:`mark_down`, called by the kernel's middleware).
    """

    CACHE_S = 0.5
    #: What a failed probe raises.
    ERRORS: tuple[type[BaseException], ...] = (*DATABASE_DOWN_ERRORS, peewee.DatabaseError)

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.healthy_until = 0.0  # time.monotonic()

    def fresh(self) -> bool:
        return time.monotonic() < self.healthy_until

    def probe(self) -> None:
        """``SELECT 1``; raises the database's error when it is down."""
        now = time.monotonic()
        self.db.execute_sql("SELECT 1").fetchone()
        self.healthy_until = now + self.CACHE_S

    def mark_down(self) -> None:
        self.healthy_until = 0.0


def database_down(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    """Error handler of :data:`~gateway_kernel.db.DATABASE_DOWN_ERRORS`: 503, retry shortly."""
    req.context.db_broken = True
    log.warning("database unavailable (request_id=%s): %s", getattr(req.context, "request_id", "-"), ex)
    raise GatewayError(503, "database_unavailable", "Database unavailable, retry shortly",
                       {"Retry-After": "1"})


def install_error_handlers(app: Any, unexpected: Any = handle_unexpected,
                           down: Any = database_down) -> None:
    """One envelope for every error (``gateway_kernel.errors``); a database outage is a 503."""
    app.req_options.auto_parse_form_urlencoded = False
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, unexpected)
    app.add_error_handler(DATABASE_DOWN_ERRORS, down)


class KernelMiddleware:
    """Request id, CORS, auth dispatch for routes, and connection release."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.route_auth = gateway.route_auth
        origins = gateway.config["FLOWORK_CORS_ORIGINS"]
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)
        headers = {"Content-Type", "X-Request-ID", *gateway.scheme_headers()}
        for extra in gateway.hook.gateway_cors_headers():
            headers.update(extra)
        self.allow_headers = ", ".join(sorted(headers))
        self.allow_methods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        self.max_body = gateway.max_body

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        request_id = req.get_header("X-Request-ID")
        if not request_id or not _REQUEST_ID.match(request_id):
            request_id = _new_request_id()
        req.context.request_id = request_id
        req.context.max_body = self.max_body
        req.context.principal = None
        REQUEST_ID.set(request_id)  # on every log line this request causes
        # For the access log written after the last byte, outside Falcon (observe.py).
        carrier = getattr(req, "scope", None)
        (carrier if carrier is not None else req.env)[CONTEXT_KEY] = req.context
        resp.set_header("X-Request-ID", request_id)
        if self.any_origin:
            resp.set_header("Access-Control-Allow-Origin", "*")
        else:
            origin = req.get_header("Origin")
            if origin and origin in self.origins:
                resp.set_header("Access-Control-Allow-Origin", origin)
                resp.append_header("Vary", "Origin")
        if req.method == "OPTIONS":
            # Preflights never need auth and never reach a plugin (or an engine).
            resp.set_header("Access-Control-Allow-Methods", self.allow_methods)
            resp.set_header("Access-Control-Allow-Headers", self.allow_headers)
            resp.set_header("Access-Control-Max-Age", "600")
            resp.status = falcon.HTTP_204
            resp.complete = True

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         params: dict) -> None:
        if resource is None:  # sinks authenticate themselves
            return
        found = self.route_auth.get(req.uri_template, req.method)
        if found is None:  # method not served here: Falcon answers 405
            return
        kind, owner = found
        self.gateway.authenticate(req, kind)
        self.gateway.admit(req, resp, owner)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        set_route(req)
        broken = getattr(req.context, "db_broken", False)
        if broken:
            self.gateway.health.mark_down()
        release_connection(self.gateway.db, broken=broken)
