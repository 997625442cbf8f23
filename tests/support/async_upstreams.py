"""An asyncio engine stand-in on 127.0.0.1 for the upstream client tests and the benchmarks.

Unlike ``upstreams.Upstream`` (http.server, Content-Length bodies only) it reads chunked
request bodies, hashing them as they arrive (no buffering), and records the peer port of each
request (to see connection reuse). Routes (below ``/api/v1``):

- ``/small``: 200 with ``{"ok":true}``
- ``/gzip``: ``upstreams.GZIP_BODY`` with ``Content-Encoding: gzip``
- ``/download?size=N``: N deterministic bytes (``upstreams.pattern_bytes``), Content-Length
- ``/zeros?size=N``: N zero bytes (cheap to make: for throughput benchmarks)
- ``/hang``: reads the request, never answers
- ``/drip?n=N&interval=S``: headers at once, then N body bytes one every S s
- ``/drip-headers?interval=S``: the status line and headers one byte every S s
- ``/endless``: a body that never ends; ``disconnected`` is set when the reader goes away
- ``/close``: answers with ``Connection: close`` and closes
- ``/truncated``: declares 100 body bytes, sends 10, closes
- ``/redirect``: 302 to ``/api/v1/small``
- ``/double``: two answers to one request, in one write (a desynchronised engine)
- ``/early``: 413 as soon as the request headers are in (the body is not read), then closes
  (lingering: input is drained until the client goes)
- anything else: 200 JSON echo of method, target, headers, body length and SHA-256

Run alone (``python -m tests.support.async_upstreams`` from the repository root) it prints its
port and serves until killed (the benchmark runs it in a second process).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import sys
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httptools

from tests.support.upstreams import GZIP_BODY, pattern_bytes

SMALL = b'{"ok":true}'


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]  # lowercase names
    length: int
    sha256: str
    peer_port: int

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)


class _Request:
    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[str, str]] = []
        self.digest = hashlib.sha256()
        self.length = 0
        self.headers_complete = False
        self.done = asyncio.Event()

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_complete = True

    def on_body(self, body: bytes) -> None:
        self.digest.update(body)
        self.length += len(body)

    def on_message_complete(self) -> None:
        self.done.set()


class AsyncEngine:
    """The server in a thread with its own event loop (see the module docstring)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.requests: list[Received] = []
        self.disconnected = threading.Event()
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> AsyncEngine:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stub engine did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.serve())
        self._loop.close()

    async def serve(self, port: int = 0, announce: bool = False) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", port,
                                            ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        if announce:
            print(self.port, flush=True)
        self._ready.set()
        async with server:
            await self._stop.wait()
            for task in list(self._tasks):
                task.cancel()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        peer_port = writer.get_extra_info("peername")[1]
        try:
            while True:
                request = _Request()
                parser = httptools.HttpRequestParser(request)
                while not request.done.is_set():
                    if request.headers_complete and request.target.endswith(b"/early"):
                        self._send(writer, 413, b'{"error":"too large"}', [])
                        await writer.drain()
                        # A lingering close, as real servers do: closing with unread input
                        # would send a reset that can destroy the answer in flight.
                        writer.write_eof()
                        async with asyncio.timeout(5):
                            while await reader.read(256 * 1024):
                                pass
                        return
                    data = await reader.read(256 * 1024)
                    if not data:
                        return
                    parser.feed_data(data)
                seen = Received(parser.get_method().decode(), request.target.decode("latin-1"),
                                request.headers, request.length, request.digest.hexdigest(),
                                peer_port)
                self.requests.append(seen)
                if not await self._answer(seen, writer) or not parser.should_keep_alive():
                    return
        except (ConnectionError, httptools.HttpParserError, asyncio.CancelledError):
            self.disconnected.set()
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _answer(self, seen: Received, writer: asyncio.StreamWriter) -> bool:
        """Answer ``seen``; False to close the connection afterwards."""
        parts = urlsplit(seen.target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = parts.path.removeprefix("/api/v1")
        if route == "/small":
            self._send(writer, 200, SMALL, [("Content-Type", "application/json")],
                       head=seen.method == "HEAD")
        elif route == "/gzip":
            self._send(writer, 200, GZIP_BODY, [("Content-Encoding", "gzip")])
        elif route == "/download":
            size = int(query.get("size", "0"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for block in pattern_bytes(size):
                writer.write(block)
                await writer.drain()
        elif route == "/zeros":
            size = int(query.get("size", "0"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            block = bytes(256 * 1024)
            while size > 0:
                writer.write(block[:size])
                size -= len(block)
                await writer.drain()
        elif route == "/hang":
            await asyncio.sleep(60)
            return False
        elif route == "/drip":
            n, interval = int(query.get("n", "10")), float(query.get("interval", "0.05"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            for _ in range(n):
                writer.write(b"d")
                await writer.drain()
                await asyncio.sleep(interval)
        elif route == "/drip-headers":
            interval = float(query.get("interval", "0.05"))
            raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: " + b"y" * 200 + b"\r\n\r\nok"
            for i in range(len(raw)):
                writer.write(raw[i:i + 1])
                await writer.drain()
                await asyncio.sleep(interval)
        elif route == "/endless":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 40))
            block = b"e" * 65536
            try:
                for _ in range(1 << 20):
                    writer.write(block)
                    await writer.drain()
            except ConnectionError:
                self.disconnected.set()
            return False
        elif route == "/truncated":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"t" * 10)
            await writer.drain()
            return False
        elif route == "/double":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-N: 1\r\n\r\nok"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-N: 2\r\n\r\nbad")
        elif route == "/redirect":
            self._send(writer, 302, b"", [("Location", "/api/v1/small")])
        elif route == "/close":
            self._send(writer, 200, SMALL, [("Connection", "close")])
            await writer.drain()
            return False
        else:
            body = json.dumps({"method": seen.method, "target": seen.target,
                               "headers": seen.headers, "length": seen.length,
                               "sha256": seen.sha256}).encode()
            self._send(writer, 200, body, [("Content-Type", "application/json")])
        await writer.drain()
        return True

    @staticmethod
    def _send(writer: asyncio.StreamWriter, status: int, body: bytes,
              headers: list[tuple[str, str]], head: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} OK", f"Content-Length: {len(body)}"]
        lines += [f"{n}: {v}" for n, v in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                     + (b"" if head else body))


if __name__ == "__main__":
    engine = AsyncEngine()
    asyncio.run(engine.serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0, announce=True))
