"""The stub engine: one loopback stand-in for a Core engine, shared by the tests and bench/.

Its answers, for any method and any path (defined once, in :func:`route`):

- ``…/big/<n>`` and ``…/bench/download?bytes=<n>``: ``n`` zero bytes with Content-Length,
  streamed (a large download)
- ``POST|PUT …/bench/upload``: reads the body, answers ``{"received": <bytes>}``
- ``GET /api/v1/system/health``: the gateway's healthy body (what a server's start-up waits for)
- anything else: 200 ``{"engine": "stub", "path": <the raw request target>}``

Served two ways:

- :class:`StubEngine`: in this process (a thread) on http.server, recording every request
  exactly as it arrived: raw target, every header, the body. The tests assert on these
  records, so the server must not filter (waitress drops headers with an underscore and, by
  default, X-Forwarded-*) nor normalise anything.

      with StubEngine() as stub:
          ...heartbeat with stub.url, send proxied requests...
          assert stub.paths() == ["/api/v1/workflows"]

- :func:`create_app` (WSGI) and :func:`create_asgi_app`: the same answers as a bare Falcon
  app, the least a Falcon app can do, for a server process of its own: ``bench/ceiling.py``
  serves it under waitress with ``serve``'s settings as the benchmark's stub engine and as its
  ceiling (under uvicorn, ``--asgi``: the default server's ceiling; no transfers there).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import falcon
import falcon.asgi

HEALTH_PATH = "/api/v1/system/health"
HEALTH_BODY = json.dumps({"status": "healthy", "database": "connected"}).encode()
CHUNK = 256 * 1024
_ZEROS = bytes(CHUNK)

ECHO, HEALTH, DOWNLOAD, UPLOAD = "echo", "health", "download", "upload"


def route(method: str, target: str) -> tuple[str, int]:
    """What the stub engine answers to ``method`` ``target`` (the raw request target): one of
    ``ECHO``, ``HEALTH``, ``DOWNLOAD`` (with its size in bytes) or ``UPLOAD``."""
    path, _, query = target.partition("?")
    if path.endswith("/bench/upload") and method in ("POST", "PUT"):
        return UPLOAD, 0
    if path.endswith("/bench/download"):
        values = parse_qs(query).get("bytes", ["0"])
        return DOWNLOAD, int(values[0]) if values[0].isdigit() else 0
    head, _, last = path.rstrip("/").rpartition("/")
    if last.isdigit() and head.endswith("/big"):
        return DOWNLOAD, int(last)
    if path == HEALTH_PATH and method in ("GET", "HEAD"):
        return HEALTH, 0
    return ECHO, 0


def echo_body(target: str) -> bytes:
    return json.dumps({"engine": "stub", "path": target}).encode()


def zeros(size: int) -> Iterator[bytes]:
    """``size`` zero bytes in chunks of ``CHUNK``."""
    left = size
    while left > 0:
        n = min(left, CHUNK)
        yield _ZEROS if n == CHUNK else _ZEROS[:n]
        left -= n


# -- in this process, recording ------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str  # the raw request target, exactly as received
    headers: dict[str, str]
    body: bytes


class StubEngine:
    """The stub engine on 127.0.0.1 in a thread of this process, recording every request in
    ``requests`` (see the module docstring)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with stub._lock:
                    stub.requests.append(Recorded(self.command, self.path,
                                                  {k.lower(): v for k, v in self.headers.items()},
                                                  body))
                kind, size = route(self.command, self.path)
                if kind == DOWNLOAD:
                    self._send(200, "application/octet-stream", size, zeros(size))
                elif kind == UPLOAD:
                    data = json.dumps({"received": len(body)}).encode()
                    self._send(200, "application/json", len(data), [data])
                else:
                    data = HEALTH_BODY if kind == HEALTH else echo_body(self.path)
                    self._send(200, "application/json", len(data), [data])

            def _send(self, status: int, content_type: str, length: int,
                      body: Iterator[bytes] | list[bytes]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if self.command == "HEAD":
                    return
                try:
                    for chunk in body:
                        self.wfile.write(chunk)
                except OSError:  # the gateway gave up on this download
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def __enter__(self) -> StubEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- as a bare Falcon app, for a server process ---------------------------------------------------


class _Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = HEALTH_BODY


def _sink(req: falcon.Request, resp: falcon.Response) -> None:
    target = req.env.get("REQUEST_URI") or req.relative_uri
    kind, size = route(req.method, target)
    if kind == DOWNLOAD:
        resp.content_type = "application/octet-stream"
        resp.content_length = size
        if req.method != "HEAD":
            resp.stream = zeros(size)
        return
    if kind == UPLOAD:
        received = 0
        stream = req.bounded_stream
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            received += len(chunk)
        resp.content_type = falcon.MEDIA_JSON
        resp.data = json.dumps({"received": received}).encode()
        return
    resp.content_type = falcon.MEDIA_JSON
    resp.data = echo_body(target)


def create_app() -> falcon.App:
    """The stub engine as a bare Falcon WSGI app."""
    app = falcon.App()
    app.req_options.auto_parse_form_urlencoded = False
    app.add_route(HEALTH_PATH, _Health())
    app.add_sink(_sink, re.compile(r"^/(?!api/v1/system/health$)"))
    return app


class _AsyncHealth:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = HEALTH_BODY


async def _async_sink(req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = echo_body(req.relative_uri)


def create_asgi_app() -> falcon.asgi.App:
    """The stub engine's health and JSON answers as a native Falcon ASGI app (no transfers)."""
    app = falcon.asgi.App()
    app.req_options.auto_parse_form_urlencoded = False
    app.add_route(HEALTH_PATH, _AsyncHealth())
    app.add_sink(_async_sink, re.compile(r"^/(?!api/v1/system/health$)"))
    return app
