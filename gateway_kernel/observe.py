"""What an operator sees: one access-log line per request, the request id on every log line a
request causes, text or JSON logs, and Prometheus metrics.

The access line and the request metrics are written by a thin wrapper around the app (ASGI
or WSGI), after the last byte of the answer (or the client's departure), so the duration and
byte count are the whole exchange, streamed proxy answers included. What only the app knows
(route template, principal, engine, request id) travels in the request's ``context``, which
the kernel's middleware puts into the ASGI scope / WSGI environ under ``CONTEXT_KEY``.

Never logged: paths (only route templates: a path can carry a share token), query strings,
headers, bodies, credentials.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: The request being served in this context (event-loop task or worker thread).
REQUEST_ID: ContextVar[str] = ContextVar("flowork_request_id", default="-")
#: Where the kernel puts ``req.context`` in the ASGI scope / WSGI environ.
CONTEXT_KEY = "flowork.context"
#: The route label of a request no route or sink matched (keeps label cardinality bounded).
UNMATCHED = "(unmatched)"
#: Status logged when the client left before any answer started (nginx's convention).
CLIENT_CLOSED = 499

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
ACCESS_LOGGER = "flowork.access"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)
#: Libraries that log every request at INFO (with engine URLs and query strings): warnings only.
_CHATTY_LOGGERS = ("httpx", "httpcore", "uvicorn.access")

access_log = logging.getLogger(ACCESS_LOGGER)


# -- logging ---------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Stamps every record with the request id of the context that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


#: Attributes of the access record, in the order the text line shows them.
ACCESS_FIELDS = ("method", "route", "status", "duration_ms", "bytes", "principal", "engine_id",
                 "client")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        access = getattr(record, "access", None)
        if access:
            line += " " + " ".join(f"{k}={access[k]}" for k in ACCESS_FIELDS
                                   if access.get(k) is not None)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (+ access fields)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        access = getattr(record, "access", None)
        if access:
            data.update((k, v) for k, v in access.items() if v is not None)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, separators=(",", ":"), default=str)


def configure_logging(fmt: str = "text", level: str = "info", *,
                      stream: Any = None) -> logging.Handler:
    """Root logging for a server process: one handler, the request-id filter, the format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


# -- metrics ---------------------------------------------------------------------------------


class Metrics:
    """A gateway's Prometheus registry (one per gateway: tests build many in one process).

    Plugins add their own series with :meth:`counter`, :meth:`gauge` and :meth:`histogram`
    (idempotent by name, so a plugin may ask again)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._made: dict[str, Any] = {}
        self.requests = self.counter("flowork_http_requests", "HTTP requests answered",
                                     ("method", "route", "status"))
        self.duration = self.histogram("flowork_http_request_duration_seconds",
                                       "Time from request to last byte of the answer",
                                       ("method", "route"))
        self.auth_failures = self.counter("flowork_auth_failures",
                                          "Refused authentications", ("scheme", "code"))

    def _make(self, kind: type, name: str, doc: str, labels: Sequence[str], **kw: Any) -> Any:
        metric = self._made.get(name)
        if metric is None:
            metric = kind(name, doc, tuple(labels), registry=self.registry, **kw)
            self._made[name] = metric
        return metric

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._make(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._make(Gauge, name, doc, labels)

    def histogram(self, name: str, doc: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = _LATENCY_BUCKETS) -> Histogram:
        return self._make(Histogram, name, doc, labels, buckets=tuple(buckets))

    def watch_pool(self, db: Any) -> None:
        """Gauges of a pooled database's connections (PostgreSQL, CockroachDB); nothing for
        an unpooled one."""
        if hasattr(db, "_in_use"):
            pool_use = self.gauge("flowork_db_pool_connections", "Pooled database connections",
                                  ("state",))
            pool_use.labels("in_use").set_function(lambda: len(db._in_use))
            pool_use.labels("idle").set_function(lambda: len(db._connections))

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- the per-request record -----------------------------------------------------------------


class MetricsListener:
    """A separate listener serving /metrics without auth (``FLOWORK_METRICS_ADDRESS``)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._server: Any = None

    def start(self, address: str | None) -> None:
        """Listen on ``address`` (host:port), if given and not listening yet."""
        if not address or self._server is not None:
            return
        from prometheus_client import start_http_server

        from .config import ConfigError

        host, _, port = address.rpartition(":")
        try:
            self._server = start_http_server(int(port), host.strip("[]") or "127.0.0.1",
                                             registry=self.metrics.registry)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"FLOWORK_METRICS_ADDRESS {address!r}: {exc}") from None
        logging.getLogger("gateway_kernel").info("metrics on http://%s/metrics", address)

    def stop(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(5)
            self._server = None


def set_route(req: Any) -> None:
    """The route template for access logs and metrics (sinks set theirs on entry)."""
    if req.uri_template is not None:
        req.context.route = req.uri_template


def sink_route(prefix: str) -> str:
    """A sink's label in access logs and metrics (its prefix, then any path)."""
    return f"{prefix}/{{path}}"


def _principal_label(principal: Any) -> str | None:
    if principal is None:
        return None
    account = getattr(principal, "account", None)
    if account is not None:
        return f"{principal.kind}:{account.public_address}"
    if getattr(principal, "engine_id", None):
        return f"{principal.kind}:{principal.engine_id}"
    return principal.kind


class Observer:
    """Writes the access line and the request metrics of one finished exchange."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._log = access_log

    def finish(self, method: str, context: Any, status: int, started: float, sent: int,
               client: str | None) -> None:
        elapsed = time.perf_counter() - started
        route = getattr(context, "route", None) or UNMATCHED
        metrics = self.metrics
        metrics.requests.labels(method, route, str(status)).inc()
        metrics.duration.labels(method, route).observe(elapsed)
        if self._log.isEnabledFor(logging.INFO):
            principal = getattr(context, "principal", None)
            engine = getattr(context, "engine_id", None) or getattr(principal, "engine_id", None)
            self._log.info(
                "%s %s %d", method, route, status,
                extra={"request_id": getattr(context, "request_id", "-"), "access": {
                    "method": method, "route": route, "status": status,
                    "duration_ms": round(elapsed * 1000, 3), "bytes": sent,
                    "principal": _principal_label(principal), "engine_id": engine,
                    "client": client,
                }})


class _Context:
    """Stand-in when a request never reached the kernel's middleware (a server-level error)."""

    route = None
    principal = None
    request_id = "-"


class ObservedASGI:
    """Counts the bytes of each HTTP answer and reports the exchange when it ends."""

    __slots__ = ("app", "observer")

    def __init__(self, app: Any, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = CLIENT_CLOSED
        sent = 0

        async def counting_send(message: dict) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            client = scope.get("client")
            # A (host, port) pair; falcon.testing passes an iterator, which only Falcon reads.
            self.observer.finish(scope["method"], scope.get(CONTEXT_KEY) or _Context, status,
                                 started, sent,
                                 client[0] if isinstance(client, tuple | list) else None)
            REQUEST_ID.set("-")


class ObservedBody:
    """A WSGI answer's iterable, counted; the exchange is reported when the server closes it."""

    __slots__ = ("_body", "_done", "_environ", "_observer", "_started", "_status", "sent")

    def __init__(self, body: Iterable[bytes], observer: Observer, environ: dict,
                 status: list[int], started: float) -> None:
        self._body = body
        self._observer = observer
        self._environ = environ
        self._status = status
        self._started = started
        self._done = False
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                environ = self._environ
                self._observer.finish(environ["REQUEST_METHOD"],
                                      environ.get(CONTEXT_KEY) or _Context, self._status[0],
                                      self._started, self.sent, environ.get("REMOTE_ADDR"))
                REQUEST_ID.set("-")


def observed_wsgi_call(app: Callable, observer: Observer, environ: dict,
                       start_response: Callable) -> ObservedBody:
    started = time.perf_counter()
    status = [CLIENT_CLOSED]

    def recording_start_response(line: str, headers: list, exc_info: Any = None) -> Any:
        status[0] = int(line[:3])
        return start_response(line, headers, exc_info) if exc_info else start_response(line,
                                                                                        headers)

    body = app(environ, recording_start_response)
    return ObservedBody(body, observer, environ, status, started)
