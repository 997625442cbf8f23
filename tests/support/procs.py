"""Server processes on loopback, for tests and bench/ alike: one helper for all of them.

    with GatewayProcess.start({"DATABASE_URL": url}, log_dir=tmp_path) as gw:
        httpx.get(gw.url("/system/health"))

``GatewayProcess.start`` runs ``flowork-gateway serve`` and waits until its health check
answers (healthy or not); ``ServerProcess`` is any server that takes ``--host``/``--port`` (the
benchmark's gateways, baselines and stub engine), started without waiting so that several can
come up at once. Each gets a free port on 127.0.0.1, the environment given (gateway settings
from the caller's environment are removed first, so a developer's shell cannot change a test
or a measurement), its own log file in ``log_dir`` (also its working directory), and is
stopped (terminate, then kill) by ``stop()`` or when its ``with`` block ends.
The stub engine is ``tests.support.stub_engine``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import httpx

API = "/api/v1"
SERVICE_SECRET = "procs-service-secret-" + "y" * 16
#: Removed from the caller's environment before a server starts.
GATEWAY_ENV_PREFIXES = ("FLOWORK_", "DATABASE_URL", "GATEWAY_SECRET_TOKEN", "ECC_BACKEND_CLASS")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gateway_executable() -> str:
    """The ``flowork-gateway`` script next to the running interpreter (the venv's)."""
    name = "flowork-gateway.exe" if os.name == "nt" else "flowork-gateway"
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def gateway_argv(threads: int | None = None, server: str | None = None) -> list[str]:
    """``flowork-gateway serve`` (with serve's own defaults where ``threads`` or ``server`` is
    None); ``--host``/``--port`` are added by :class:`ServerProcess`."""
    return [gateway_executable(), "serve", *(["--threads", str(threads)] if threads else []),
            *(["--server", server] if server else [])]


def clean_environment(settings: Mapping[str, str],
                      secret: str | None = SERVICE_SECRET) -> dict[str, str]:
    """This process's environment without gateway settings, plus ``GATEWAY_SECRET_TOKEN`` =
    ``secret`` (unless None) and ``settings`` (which win)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(GATEWAY_ENV_PREFIXES)}
    if secret is not None:
        env["GATEWAY_SECRET_TOKEN"] = secret
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in settings.items()})
    return env


def rss_kib(pid: int) -> int | None:
    """Resident memory of process ``pid`` (Linux /proc), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class ServerProcess:
    """One server subprocess on 127.0.0.1, started at once (not waited for: ``wait_up``).

    ``--host 127.0.0.1 --port <port>`` are appended to ``argv`` (unless ``listen_args`` is
    false: then ``argv`` names ``port`` itself); output goes to ``<log_dir>/<name>.log``
    (appended: a server restarted under the same name keeps one log). It is up once a GET of
    ``health`` answers one of ``up_statuses``."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_dir: Path, *,
                 name: str | None = None, port: int | None = None,
                 health: str = API + "/system/health", up_statuses: Collection[int] = (200,),
                 listen_args: bool = True) -> None:
        self.port = port or free_port()
        self.name = name or f"server-{self.port}"
        self.health = health
        self.up_statuses = tuple(up_statuses)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        self._log = open(self.log_path, "ab")  # closed in stop()
        address = ["--host", "127.0.0.1", "--port", str(self.port)] if listen_args else []
        try:
            self.proc = subprocess.Popen([*argv, *address], env=dict(env), stdout=self._log,
                                         stderr=subprocess.STDOUT, cwd=log_dir)
        except BaseException:
            self._log.close()
            raise

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of an API path (``/auth/profile`` → http://…/api/v1/auth/profile)."""
        return self.base + API + path

    def wait_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if httpx.get(self.base + self.health, timeout=2).status_code in self.up_statuses:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not come up in {timeout} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_kib(self) -> int | None:
        """Resident memory of the server process (Linux /proc), or None elsewhere."""
        return rss_kib(self.proc.pid)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayProcess(ServerProcess):
    """One ``flowork-gateway serve`` subprocess (see :meth:`start`)."""

    @classmethod
    def start(cls, settings: Mapping[str, str], log_dir: Path, threads: int | None = 4,
              port: int | None = None, wait: float = 60.0,
              server: str | None = None) -> GatewayProcess:
        """Start a server and wait until its health check answers (healthy or not).

        ``threads``: None for serve's default; ``server``: "uvicorn" or "waitress"; default:
        FLOWORK_TEST_SERVER, else serve's own. The secret is ``SERVICE_SECRET`` unless
        ``settings`` name another."""
        port = port or free_port()
        server = server or os.environ.get("FLOWORK_TEST_SERVER") or None
        gateway = cls(gateway_argv(threads, server), clean_environment(settings), log_dir,
                      name=f"gateway-{port}", port=port, up_statuses=(200, 503))
        try:
            gateway.wait_up(wait)
        except BaseException:
            gateway.stop()
            raise
        return gateway

    def __enter__(self) -> GatewayProcess:
        return self
