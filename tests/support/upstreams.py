"""Real loopback servers for the proxy tests: an engine stand-in and a waitress gateway.

``Upstream`` is a threaded HTTP/1.1 server on 127.0.0.1 that records what it receives and
answers by path (below ``/api/v1``):

- ``/status/<code>``: that status, ``X-Custom: teapot``, a small JSON body (none for 204/304)
- ``/gzip``: a gzip-encoded JSON body (``Content-Encoding: gzip``), the bytes in ``GZIP_BODY``
- ``/download?size=N``: N deterministic bytes (``pattern_bytes``), streamed in chunks
- ``/chunked?size=N``: the same without Content-Length (chunked)
- ``/connection``: ``Connection: X-Bar, Keep-Alive`` with ``X-Bar`` and ``Keep-Alive`` headers
- ``/hang``: reads the request, never answers (until the server closes)
- ``/drip-headers?interval=S``: the status line and headers one byte every S seconds
- ``/drip?n=N&interval=S[&chunked=1]``: headers at once, then N body bytes one every S s
- ``/hold``: answers only once ``gate`` is set
- ``/gated``: headers and ``first`` at once, ``second`` after ``gate`` is set
- ``/reflect…``: sends the request (headers and all) to ``reflect_to`` and answers with its
  answer: an engine proxying back to the gateway
- ``/sse``: server-sent events (chunked): ``data: 1`` at once, ``data: 2`` after ``gate``
- ``/endless``: an endless body; ``disconnected`` is set when the reader goes away
- ``/cached?cc=<Cache-Control>&vary=<Vary>&cookie=1&chunked=1&pad=N``: counts hits, answers
  with those headers (and a Set-Cookie; chunked, without Content-Length; N bytes of padding);
  so do ``/news``, ``/localization/…`` and ``/components/…``
- anything else: 200 JSON echo of method, raw target, headers, body length and SHA-256
"""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from gateway_kernel import GatewayPlugin, hookimpl
from gateway_kernel.errors import GatewayError, not_found, unavailable
from gateway_plugins.proxy.errors import UpstreamAborted as UpstreamAborted  # for the tests
from gateway_plugins.proxy.hookspecs import EngineTarget
from tests.support.procs import free_port

GZIP_BODY = gzip.compress(json.dumps({"compressed": True, "pad": "x" * 2000}).encode(), mtime=0)
CHUNK = 64 * 1024


def pattern_bytes(size: int) -> Iterator[bytes]:
    """``size`` deterministic, non-repeating-per-chunk bytes, in 64 KiB chunks."""
    sent = 0
    counter = 0
    while sent < size:
        block = hashlib.sha256(counter.to_bytes(8, "big")).digest() * (CHUNK // 32)
        block = block[: min(CHUNK, size - sent)]
        counter += 1
        sent += len(block)
        yield block


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for block in pattern_bytes(size):
        digest.update(block)
    return digest.hexdigest()


@dataclass
class Seen:
    method: str
    target: str  # the raw request target, exactly as received
    headers: list[tuple[str, str]]  # lowercase names, in order, duplicates kept
    length: int
    sha256: str

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        return ", ".join(values) if values else None

    def names(self) -> set[str]:
        return {n for n, _ in self.headers}


class Upstream:
    """A loopback engine stand-in (see the module docstring)."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.hits: dict[str, int] = {}
        self.gate = threading.Event()
        self.release = threading.Event()
        self.disconnected = threading.Event()
        #: Base URL that ``/reflect…`` sends each request back to (a gateway), if set.
        self.reflect_to: str | None = None
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                digest = hashlib.sha256()
                length = 0
                for chunk in self._body():
                    digest.update(chunk)
                    length += len(chunk)
                seen = Seen(self.command, self.path,
                            [(k.lower(), v) for k, v in self.headers.items()],
                            length, digest.hexdigest())
                with upstream._lock:
                    upstream.requests.append(seen)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                route = parts.path.removeprefix("/api/v1")
                try:
                    upstream.answer(self, route, query, seen)
                except (BrokenPipeError, ConnectionResetError):
                    upstream.disconnected.set()
                    self.close_connection = True

            def _body(self) -> Iterator[bytes]:
                """The request body: Content-Length bytes, or chunked (a streamed upload)."""
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return
                        remaining = size
                        while remaining > 0:
                            chunk = self.rfile.read(min(CHUNK, remaining))
                            if not chunk:
                                return
                            remaining -= len(chunk)
                            yield chunk
                        self.rfile.readline()  # the CRLF after each chunk
                remaining = int(self.headers.get("Content-Length") or 0)
                while remaining > 0:
                    chunk = self.rfile.read(min(CHUNK, remaining))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                    yield chunk

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def last(self) -> Seen:
        with self._lock:
            return self.requests[-1]

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    # -- answers ---------------------------------------------------------------------------

    def answer(self, h: BaseHTTPRequestHandler, route: str, query: dict[str, str],
               seen: Seen) -> None:
        head = h.command == "HEAD"
        if route in ("/status/204", "/status/304"):
            h.send_response(int(route[-3:]))
            h.send_header("X-Custom", "teapot")
            h.end_headers()
        elif route.startswith("/status/"):
            code = int(route.rsplit("/", 1)[1])
            body = json.dumps({"status": code}).encode()
            self._send(h, code, body, [("X-Custom", "teapot"), ("X-Other", "two")],
                       head=head)
        elif route == "/gzip":
            self._send(h, 200, GZIP_BODY, [("Content-Encoding", "gzip")], head=head)
        elif route in ("/download", "/chunked"):
            size = int(query.get("size", "0"))
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            if route == "/download":
                h.send_header("Content-Length", str(size))
            else:
                h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            if head:
                return
            for block in pattern_bytes(size):
                if route == "/download":
                    h.wfile.write(block)
                else:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            if route == "/chunked":
                h.wfile.write(b"0\r\n\r\n")
        elif route == "/connection":
            self._send(h, 200, b'{"ok":true}', [
                ("Connection", "X-Bar, Keep-Alive"), ("X-Bar", "secret-hop"),
                ("Keep-Alive", "timeout=5"), ("X-Kept", "yes"),
                ("Proxy-Authenticate", "Basic"), ("Set-Cookie", "engine=1"),
                ("Access-Control-Allow-Origin", "https://evil.example"),
            ], head=head)
        elif route == "/hang":
            self.release.wait(60)
            h.close_connection = True
        elif route == "/drip-headers":
            interval = float(query.get("interval", "0.05"))
            raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: " + b"y" * 200 + b"\r\n\r\nok"
            for i in range(len(raw)):
                if self.release.is_set():
                    break
                h.wfile.write(raw[i:i + 1])
                h.wfile.flush()
                time.sleep(interval)
            h.close_connection = True
        elif route == "/drip":
            n = int(query.get("n", "10"))
            interval = float(query.get("interval", "0.05"))
            chunked = query.get("chunked") == "1"
            h.send_response(200)
            if chunked:
                h.send_header("Transfer-Encoding", "chunked")
            else:
                h.send_header("Content-Length", str(n))
            h.end_headers()
            for _ in range(n):
                if self.release.is_set():
                    break
                h.wfile.write(b"1\r\nd\r\n" if chunked else b"d")
                h.wfile.flush()
                time.sleep(interval)
            if chunked:
                h.wfile.write(b"0\r\n\r\n")
        elif route == "/hold":
            self.gate.wait(30)
            self._send(h, 200, b'{"held":true}', [], head=head)
        elif route == "/gated":
            h.send_response(200)
            h.send_header("Content-Length", str(len(b"first") + len(b"second")))
            h.end_headers()
            h.wfile.write(b"first")
            h.wfile.flush()
            self.gate.wait(30)
            h.wfile.write(b"second")
        elif route.startswith("/reflect") and self.reflect_to:
            # a misconfigured engine that proxies back to the gateway, headers and all
            import http.client

            target = urlsplit(self.reflect_to)
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                conn.request(h.command, seen.target,
                             headers={n: v for n, v in seen.headers if n != "host"})
                answer = conn.getresponse()
                body = answer.read()
            finally:
                conn.close()
            self._send(h, answer.status, body,
                       [("Content-Type", answer.getheader("Content-Type") or "text/plain")],
                       head=head)
        elif route == "/sse":
            # server-sent events: one now, one after ``gate``, then the end (chunked)
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Cache-Control", "no-cache")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for number, wait in ((1, False), (2, True)):
                if wait:
                    self.gate.wait(30)
                event = b"data: %d\n\n" % number
                h.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
        elif route == "/endless":
            h.send_response(200)
            h.send_header("Content-Length", str(1 << 40))
            h.end_headers()
            block = b"e" * CHUNK
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not self.release.is_set():
                h.wfile.write(block)
            h.close_connection = True
        elif route.startswith("/cached") or route in ("/news",) or route.startswith(
                ("/localization/", "/components/")):
            with self._lock:
                self.hits[route] = self.hits.get(route, 0) + 1
                count = self.hits[route]
            headers = [("Content-Type", "application/json")]
            if "cc" in query:
                headers.append(("Cache-Control", query["cc"]))
            if "vary" in query:
                headers.append(("Vary", query["vary"]))
            if "cookie" in query:
                headers.append(("Set-Cookie", "tracker=1"))
            body = json.dumps({"route": route, "hit": count,
                               "accept_encoding": seen.header("accept-encoding"),
                               "pad": "p" * int(query.get("pad", "0"))}).encode()
            if query.get("chunked") == "1":
                self._send_chunked(h, 200, body, headers, head=head)
            else:
                self._send(h, 200, body, headers, head=head)
        else:
            body = json.dumps({
                "method": seen.method, "target": seen.target,
                "headers": dict(seen.headers), "length": seen.length, "sha256": seen.sha256,
            }).encode()
            self._send(h, 200, body, [("Content-Type", "application/json")], head=head)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes,
              headers: list[tuple[str, str]], head: bool = False) -> None:
        h.send_response(code)
        names = {n.lower() for n, _ in headers}
        if "content-type" not in names:
            h.send_header("Content-Type", "application/json")
        for name, value in headers:
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)


    @staticmethod
    def _send_chunked(h: BaseHTTPRequestHandler, code: int, body: bytes,
                      headers: list[tuple[str, str]], head: bool = False) -> None:
        """The body in two chunks, without Content-Length."""
        h.send_response(code)
        for name, value in headers:
            h.send_header(name, value)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        if not head:
            half = len(body) // 2
            for part in (body[:half], body[half:]):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            h.wfile.write(b"0\r\n\r\n")


def refused_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


class WaitressServer:
    """A WSGI app under a real waitress server in a thread, on a free loopback port, with the
    settings of ``flowork-gateway serve``."""

    def __init__(self, app: object, threads: int = 4) -> None:
        import waitress.server

        from gateway_kernel.cli import waitress_options

        self.server = waitress.server.create_server(
            app, host="127.0.0.1", port=0, threads=threads, **waitress_options())
        self.port = self.server.effective_port  # type: ignore[union-attr]
        self._closing = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.server.run()
        except (OSError, ValueError):  # its sockets were closed under the loop at the end
            if not self._closing:
                raise

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> WaitressServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self.server.close()
        self.server.task_dispatcher.shutdown()  # type: ignore[union-attr]


class UvicornServer:
    """An ASGI app under a real uvicorn server in a thread (its own event loop), on a free
    loopback port, lifespan on (the gateway's loop is set there)."""

    def __init__(self, app: object) -> None:
        import uvicorn

        self.port = free_port()
        # proxy_headers off: trust in X-Forwarded-* is the proxy plugin's decision (as in serve)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="on", proxy_headers=False,
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(30)


def serve_app(gateway: object, server: str) -> WaitressServer | UvicornServer:
    """``gateway`` under a real server: "waitress" (its WSGI app) or "uvicorn" (its ASGI app)."""
    if server == "waitress":
        return WaitressServer(gateway)
    return UvicornServer(gateway.asgi)  # type: ignore[attr-defined]


class FlakyServer:
    """A raw loopback server that handles connection *i* per ``plans[i]``: ``"drop"`` closes
    it after reading the request (no answer at all); ``"ok"`` answers 200 ``ok``. Connections
    beyond the list are dropped. ``accepted`` counts connections."""

    def __init__(self, plans: list[str]) -> None:
        self.plans = list(plans)
        self.accepted = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            plan = self.plans[self.accepted] if self.accepted < len(self.plans) else "drop"
            self.accepted += 1
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if plan == "ok":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                     b"Connection: close\r\n\r\nok")
                except OSError:
                    pass

    def __enter__(self) -> FlakyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


# -- test plugins --------------------------------------------------------------------------------

ENGINE_A = "0b1a4c2e-0000-4000-8000-00000000000a"
ENGINE_B = "0b1a4c2e-0000-4000-8000-00000000000b"


class Resolver(GatewayPlugin):
    """Stands in for the engines plugin: engine id → URL, and a default engine."""

    name = "test_resolver"
    version = "1"

    def __init__(self, urls: dict[str, str], default: str | None = None,
                 static: bool = False) -> None:
        self.urls = dict(urls)
        self.default = default
        self.static = static
        self.calls: list[tuple[str, str | None]] = []

    @hookimpl
    def flowork_resolve_engine(self, gateway, principal, engine_id):
        self.calls.append((principal.account.public_address, engine_id))
        engine_id = engine_id or self.default
        if engine_id is None:
            raise unavailable("No online engine", code="engine_offline", retry_after=5)
        if engine_id not in self.urls:
            raise not_found()
        # The caller owns every engine here (a guest's target would spend its signature).
        return EngineTarget(engine_id, self.urls[engine_id], True, self.static, owned=True)


class RequestHook(GatewayPlugin):
    """Implements ``flowork_proxy_request``: adds headers, or refuses a path."""

    name = "test_request_hook"
    version = "1"

    def __init__(self, add: dict[str, str] | None = None, refuse: str | None = None) -> None:
        self.add = add or {}
        self.refuse = refuse
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    @hookimpl
    def flowork_proxy_request(self, gateway, principal, target, method, path, headers):
        self.seen.append((method, path, dict(headers)))
        if self.refuse is not None and path.startswith(self.refuse):
            raise GatewayError(404, "not_found", "Refused by policy")
        headers.update(self.add)
