"""Real ``flowork-gateway serve`` processes for multi-instance, fault and soak runs.

    with GatewayProcess.start({"DATABASE_URL": url}, log_dir=tmp_path) as gw:
        httpx.get(gw.url("/system/health"))

Each process gets a free port on 127.0.0.1, the environment given (gateway settings from the
caller's environment are removed first, so a developer's shell cannot change a test), its own
log file, and is stopped (terminate, then kill) when the block ends. Also a loopback stub
engine that records the requests it receives (for proxy tests).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

API = "/api/v1"
SERVICE_SECRET = "procs-service-secret-" + "y" * 16
_GATEWAY_ENV_PREFIXES = ("FLOWORK_", "DATABASE_URL", "GATEWAY_SECRET_TOKEN")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gateway_executable() -> str:
    """The ``flowork-gateway`` script next to the running interpreter (the venv's)."""
    name = "flowork-gateway.exe" if os.name == "nt" else "flowork-gateway"
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def clean_environment(settings: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_GATEWAY_ENV_PREFIXES)}
    env["GATEWAY_SECRET_TOKEN"] = SERVICE_SECRET
    env.update({k: str(v) for k, v in settings.items()})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class GatewayProcess:
    """One ``flowork-gateway serve`` subprocess."""

    port: int
    proc: subprocess.Popen
    log_path: Path
    _log_handle: object = field(repr=False, default=None)

    @classmethod
    def start(cls, settings: Mapping[str, str], log_dir: Path, threads: int = 4,
              port: int | None = None, wait: float = 60.0,
              server: str | None = None) -> GatewayProcess:
        """Start a server and wait until its health check answers (healthy or not).

        ``server``: "uvicorn" or "waitress"; default: FLOWORK_TEST_SERVER, else serve's own."""
        port = port or free_port()
        server = server or os.environ.get("FLOWORK_TEST_SERVER") or None
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"gateway-{port}.log"
        handle = open(log_path, "ab")  # closed in stop()
        proc = subprocess.Popen(
            [gateway_executable(), "serve", "--host", "127.0.0.1", "--port", str(port),
             "--threads", str(threads), *(["--server", server] if server else [])],
            env=clean_environment(settings), stdout=handle, stderr=subprocess.STDOUT,
            cwd=log_dir,
        )
        gateway = cls(port=port, proc=proc, log_path=log_path, _log_handle=handle)
        try:
            gateway.wait_up(wait)
        except BaseException:
            gateway.stop()
            raise
        return gateway

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of an API path (``/auth/profile`` → http://…/api/v1/auth/profile)."""
        return self.base + API + path

    def wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(self.url("/system/health"), timeout=2)
                if r.status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not come up in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_kib(self) -> int | None:
        """Resident memory of the server process (Linux /proc), or None elsewhere."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a loopback stub engine --------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str  # the raw request target, exactly as received
    headers: dict[str, str]
    body: bytes


def _big_size(path: str) -> int | None:
    parts = path.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "big" and parts[-1].isdigit():
        return int(parts[-1])
    return None


class StubEngine:
    """A tiny HTTP server on 127.0.0.1 that records every request and answers JSON.

    It answers ``{"engine": "stub", "path": <raw target>}`` with status 200 to everything,
    except ``…/big/<n>``: ``n`` bytes of zeros (a large download).
    """

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
                size = _big_size(self.path)
                if size is not None:  # /…/big/<bytes>: a large download, streamed
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    chunk = b"\0" * 65536
                    try:
                        for start in range(0, size, len(chunk)):
                            self.wfile.write(chunk[: size - start])
                    except OSError:  # the gateway gave up on this download
                        pass
                    return
                data = json.dumps({"engine": "stub", "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

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
