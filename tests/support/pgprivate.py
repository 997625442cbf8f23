"""A private, throwaway PostgreSQL server for fault tests (never the machine's shared one).

    pg = PrivatePostgres.create(tmp_path)      # initdb into a temporary directory
    pg.start()                                 # its own free port on 127.0.0.1, trust auth
    url = pg.create_database("gw")             # postgresql://postgres@127.0.0.1:<port>/gw
    pg.stop("immediate")                       # a crash: committed data must survive
    pg.start()                                 # same data directory, same port
    pg.destroy()                               # stop and delete everything

PostgreSQL refuses to run as root, so as root every server command runs as the ``postgres``
system user (``runuser``) and the data directory is handed to that user. The server is tuned
for tests (fsync off: the operating system does not crash in a test, a server crash is what we
simulate, and WAL written to the OS survives it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import free_port

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
                     "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/14/bin")
SERVER_USER = "postgres"


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    env = os.environ.get("FLOWORK_PG_BIN")
    for candidate in ((env,) if env else ()) + PG_BIN_CANDIDATES:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class PrivatePostgres:
    """One private PostgreSQL cluster: a data directory, a port, a log file."""

    bin_dir: Path
    base_dir: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    # -- life cycle ----------------------------------------------------------------------------

    @classmethod
    def create(cls, parent: Path | None = None, port: int | None = None) -> PrivatePostgres:
        """initdb a new cluster in a fresh directory under ``parent`` (default: the temp dir)."""
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        base = Path(tempfile.mkdtemp(prefix="flowork-pg-", dir=parent))
        pg = cls(bin_dir=bin_dir, base_dir=base, port=port or free_port())
        if _as_root():
            shutil.chown(base, SERVER_USER, SERVER_USER)
        pg._run("initdb", "-D", str(pg.data_dir), "-U", "postgres", "--auth=trust",
                "--no-sync", "-E", "UTF8", "--locale=C")
        return pg

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / tool), *args]
        if _as_root():
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return command

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self._command(tool, *args), capture_output=True, text=True,
                                cwd=self.base_dir, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr}"
                               f"{result.stdout}\n{self.log_tail()}")
        return result

    def start(self) -> None:
        """Start the server (waits until it accepts connections)."""
        options = " ".join([
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.base_dir}",
            "-c fsync=off",
            "-c full_page_writes=off",
            "-c max_connections=100",
            "-c shared_buffers=16MB",
        ])
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean shut-down) or ``immediate`` (a crash)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def destroy(self) -> None:
        """Stop the server if it runs and delete its directory."""
        try:
            if self.data_dir.exists() and self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- access --------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        """An autocommit psycopg2 connection (the caller closes it)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                dbname=database, connect_timeout=5)
        conn.autocommit = True
        return conn

    def execute(self, sql: str, params: tuple = (), database: str = "postgres") -> list[tuple]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def backend_count(self, database: str) -> int:
        """Client connections to ``database`` right now (pg_stat_activity)."""
        rows = self.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        return int(rows[0][0])

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.execute("SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
