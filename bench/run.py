"""The benchmark suite: one table of ratios, each measured against a baseline in the same run.

    .venv/bin/python bench/run.py                       # full run (about 7 minutes)
    .venv/bin/python bench/run.py --smoke               # about a minute, no targets asserted
    .venv/bin/python bench/run.py --output docs/PERFORMANCE.md
    .venv/bin/python bench/run.py --rows health,warm    # only some rows (for profiling)
    .venv/bin/python bench/run.py --python-load         # the Python load generator, not wrk

Every server is its own subprocess on a free 127.0.0.1 port: gateways under ``flowork-gateway
serve`` (uvicorn; one more under ``serve --server waitress`` for the waitress proxy row),
baselines under waitress with ``serve --server waitress``'s settings (and the default
server's ceiling under uvicorn); the load comes from another process (``wrk`` when
installed, else ``bench/loadgen.py``). Baseline and subject alternate within each round and
a row's ratio is the median of its per-round ratios, because this machine is shared and noisy.

Exit status: 0, unless a row crashed or any response of any row was not a 2xx (then 1).
Targets are reported (pass/miss) but not asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))  # tests.support: the server helpers bench shares with the tests

import loadgen  # noqa: E402

from tests.support.procs import ServerProcess, clean_environment, gateway_argv, rss_kib  # noqa: E402

API = "/api/v1"
NOTES_FILE = ROOT / "docs" / "performance-notes.md"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
GIB = 1 << 30
MIB = 1 << 20


#: Load tool: wrk when installed (unless --python-load), else bench/loadgen.py.
USE_WRK = True


def use_wrk() -> bool:
    return USE_WRK and loadgen.wrk_path() is not None


@dataclass(frozen=True)
class Mode:
    name: str
    duration: float  # seconds measured per side per round
    warmup: float  # seconds of load before each measurement, not counted
    rounds: int  # baseline/subject pairs per request row
    transfer_bytes: int
    transfer_rounds: int
    many_engines: int
    threads: int = 8  # waitress threads of the waitress servers (serve --server waitress's default)
    connections: int = 8  # concurrent keep-alive connections of the load generator


FULL = Mode("full", duration=5, warmup=1, rounds=3, transfer_bytes=GIB, transfer_rounds=3,
            many_engines=10_000)
SMOKE = Mode("smoke", duration=1, warmup=0, rounds=1, transfer_bytes=32 * MIB,
             transfer_rounds=1, many_engines=10_000)


# -- signatures -------------------------------------------------------------------------------


def checksum_address(raw: bytes) -> str:
    from eth_hash.auto import keccak

    lower = raw.hex()
    digest = keccak(lower.encode()).hex()
    pairs = zip(lower, digest[:40], strict=True)
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in pairs)


class FastSigner:
    """An Ethereum key that signs legacy Flowork messages through libsecp256k1 directly
    (about 50 µs a signature: enough to give every request of a row its own)."""

    def __init__(self) -> None:
        from coincurve import PrivateKey
        from eth_hash.auto import keccak

        self._keccak = keccak
        self._key = PrivateKey(secrets.token_bytes(32))
        public = self._key.public_key.format(compressed=False)[1:]
        self.address = checksum_address(keccak(public)[-20:])

    def headers(self, timestamp: int | None = None) -> dict[str, str]:
        text = f"flowork_api_auth|{self.address}|{int(time.time()) if timestamp is None else timestamp}"
        data = text.encode()
        digest = self._keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)
        signature = bytearray(self._key.sign_recoverable(digest, hasher=None))
        signature[64] += 27
        return {"X-User-Address": self.address, "X-Signature": "0x" + signature.hex(),
                "X-Signed-Message": text, "X-Payload-Version": "2"}


def fresh_header_sets(count: int, base: str, extra: dict[str, str]) -> list[dict[str, str]]:
    """``count`` header sets, no two alike (distinct messages), all valid for the next
    ~100 s; their addresses are registered first so the row measures verification only."""
    per_key = 215  # timestamps now-200 .. now+14: inside the default 300 s / 15 s window
    now = int(time.time())
    sets: list[dict[str, str]] = []
    with httpx.Client(timeout=30) as client:
        for _ in range(math.ceil(count / per_key)):
            signer = FastSigner()
            r = client.get(base + API + "/auth/profile", headers=signer.headers(now - 250))
            r.raise_for_status()
            for ts in range(now - 200, now - 200 + min(per_key, count - len(sets))):
                sets.append({**signer.headers(ts), **extra})
    return sets


# -- seeding ----------------------------------------------------------------------------------


@dataclass
class Seed:
    """What a seeded gateway holds for the bench user."""

    signer: FastSigner
    engine_ids: list[str]
    tokens: list[str]


def seed_gateway(base: str, own_engines: int = 3, other_users: int = 7) -> Seed:
    """The bench user owns ``own_engines``; ``other_users`` own one each (10 engines)."""
    signer = FastSigner()
    ids: list[str] = []
    tokens: list[str] = []
    with httpx.Client(base_url=base + API, timeout=30) as client:
        for i in range(own_engines):
            r = client.post("/user/engines", json={"name": f"bench engine {i}"},
                            headers=signer.headers())
            r.raise_for_status()
            ids.append(r.json()["id"])
            tokens.append(r.json()["raw_token"])
        for i in range(other_users):
            r = client.post("/user/engines", json={"name": f"other engine {i}"},
                            headers=FastSigner().headers())
            r.raise_for_status()
    return Seed(signer, ids, tokens)


def add_filler_engines(database_url: str, count: int) -> None:
    """Insert ``count`` engines of one filler user straight into a gateway's database (the
    10,000-engine row; through the API this would take minutes)."""
    from gateway_kernel import create_gateway
    from gateway_plugins.engines.models import Engine
    from gateway_plugins.engines.tokens import token_digest

    gateway = create_gateway(environ={"DATABASE_URL": database_url, "FLOWORK_PLUGINS": "bundled"})
    token = gateway.activate()
    try:
        gateway.migrate()
        owner = gateway.ensure_account(FastSigner().address.lower())
        rows = [{"owner": owner.id, "name": f"filler {i}",
                 "token_digest": token_digest(secrets.token_hex(16))} for i in range(count)]
        with gateway.db.atomic():
            for start in range(0, count, 500):
                Engine.insert_many(rows[start:start + 500]).execute()
    finally:
        from gateway_kernel.db import deactivate

        deactivate(token)
        gateway.close()


def heartbeat(base: str, token: str, url: str) -> None:
    r = httpx.post(base + API + "/engine/heartbeat", json={"url": url},
                   headers={"X-Engine-Token": token}, timeout=30)
    r.raise_for_status()


# -- PostgreSQL ---------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str | None]:
    """A fresh database on ``admin_url``'s server (dropped afterwards), or None if there is
    no PostgreSQL to talk to."""
    try:
        import psycopg2
    except ImportError:
        yield None
        return
    name = f"flowork_bench_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = psycopg2.connect(admin_url, connect_timeout=3)
    except psycopg2.Error:
        yield None
        return
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = admin_url.rpartition("/")
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# -- measuring ----------------------------------------------------------------------------------


HeaderFactory = Callable[[], list[dict[str, str]]]


@dataclass
class Side:
    """One side of a row: a server, a path, and the headers of its requests."""

    label: str
    server: ServerProcess
    path: str
    headers: HeaderFactory = lambda: [{}]


def measure(side: Side, mode: Mode, workdir: Path) -> loadgen.LoadResult:
    header_sets = side.headers()
    if mode.warmup <= 0:  # still open the connections and warm the code paths a little
        with httpx.Client(timeout=30) as client:
            for h in header_sets[:1]:
                for _ in range(20):
                    client.get(side.server.base + side.path, headers=h)
    pid = side.server.proc.pid
    if use_wrk():
        return loadgen.run_wrk(side.server.base + side.path, header_sets, mode.connections,
                               mode.duration, mode.warmup, pid)
    spec = workdir / "loadgen-spec.json"
    spec.write_text(json.dumps({
        "host": "127.0.0.1", "port": side.server.port, "path": side.path,
        "header_sets": header_sets, "connections": mode.connections,
        "duration": mode.duration, "warmup": mode.warmup,
    }))
    cpu_before = loadgen.process_cpu_s(pid)
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "loadgen.py"), "http", str(spec)],
                          capture_output=True, text=True,
                          timeout=mode.duration + mode.warmup + 120)
    cpu_after = loadgen.process_cpu_s(pid)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed: {proc.stderr}")
    result = loadgen.LoadResult(**json.loads(proc.stdout))
    if cpu_before is not None and cpu_after is not None and result.rps:
        # the warm-up's requests ran in the same process run: count them at the same rate
        served = result.rps * (mode.duration + mode.warmup)
        result.server_cpu_us = (cpu_after - cpu_before) / served * 1e6
    return result


@dataclass
class Row:
    """One line of the table."""

    key: str
    title: str
    value: str = ""
    p50: str = "—"
    p99: str = "—"
    non2xx: int = 0
    errors: int = 0
    cpu: str = "—"  # server CPU µs per request, subject / baseline
    baseline: str = ""
    baseline_value: str = ""
    ratio: float | None = None
    ratio_text: str = ""
    target: str = "—"
    met: bool | None = None
    note: str = ""
    failed: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def fmt_rps(value: float) -> str:
    return f"{value:,.0f} req/s"


def compare(key: str, title: str, baseline: Side, subject: Side, mode: Mode, workdir: Path,
            target: float | None = None) -> Row:
    """Alternate baseline and subject for ``mode.rounds`` rounds; median per-round ratio."""
    base_runs: list[loadgen.LoadResult] = []
    subj_runs: list[loadgen.LoadResult] = []
    ratios: list[float] = []
    for round_no in range(mode.rounds):
        order = (baseline, subject) if round_no % 2 == 0 else (subject, baseline)
        got: dict[int, loadgen.LoadResult] = {}
        for side in order:
            got[id(side)] = measure(side, mode, workdir)
        b, s = got[id(baseline)], got[id(subject)]
        base_runs.append(b)
        subj_runs.append(s)
        ratios.append(s.rps / b.rps if b.rps else 0.0)
    ratio = statistics.median(ratios)

    def cpu(runs: list[loadgen.LoadResult]) -> str:
        values = [r.server_cpu_us for r in runs if r.server_cpu_us is not None]
        return f"{statistics.median(values):,.0f}" if values else "?"

    row = Row(
        key=key, title=title, cpu=f"{cpu(subj_runs)} / {cpu(base_runs)}",
        value=fmt_rps(statistics.median(r.rps for r in subj_runs)),
        p50=f"{statistics.median(r.p50_ms for r in subj_runs):.2f}",
        p99=f"{statistics.median(r.p99_ms for r in subj_runs):.2f}",
        non2xx=sum(r.non2xx for r in subj_runs + base_runs),
        errors=sum(r.errors for r in subj_runs + base_runs),
        baseline=baseline.label,
        baseline_value=(f"{fmt_rps(statistics.median(r.rps for r in base_runs))} "
                        f"(p50 {statistics.median(r.p50_ms for r in base_runs):.2f} ms, "
                        f"p99 {statistics.median(r.p99_ms for r in base_runs):.2f} ms)"),
        ratio=ratio,
        ratio_text=f"{ratio:.2f}",
        extra={"subject_rps": statistics.median(r.rps for r in subj_runs),
               "baseline_rps": statistics.median(r.rps for r in base_runs)},
    )
    if target is not None:
        row.target = f"≥ {target:g}"
        row.met = ratio >= target
    if any(r.header_sets_reused for r in subj_runs + base_runs):
        row.note = "header sets ran out and were reused (some requests were warm)"
    return row


class RssSampler:
    """Peak resident memory of a process while a block runs (sampled every 10 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_kib(pid)
        self.peak = self.before or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            value = rss_kib(self.pid)
            if value is not None and value > self.peak:
                self.peak = value

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        value = rss_kib(self.pid)
        if value is not None and value > self.peak:
            self.peak = value

    @property
    def growth_mib(self) -> float | None:
        return None if self.before is None else (self.peak - self.before) / 1024


def run_transfer(server: ServerProcess, path: str, headers: dict[str, str], direction: str,
                 size: int, workdir: Path) -> loadgen.TransferResult:
    spec = workdir / "transfer-spec.json"
    spec.write_text(json.dumps({"host": "127.0.0.1", "port": server.port, "path": path,
                                "headers": headers, "direction": direction, "bytes": size}))
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "loadgen.py"), "transfer", str(spec)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"transfer failed: {proc.stderr}")
    data = json.loads(proc.stdout)
    return loadgen.TransferResult(status=data["status"], bytes=data["bytes"],
                                  seconds=data["seconds"])


def compare_transfer(direction: str, direct: ServerProcess, gateway: ServerProcess,
                     headers: Callable[[], dict[str, str]], mode: Mode,
                     workdir: Path) -> list[Row]:
    """Direct to the stub engine vs through the proxy; throughput ratio and RSS growth."""
    size = mode.transfer_bytes
    if direction == "download":
        path = f"{API}/bench/download?bytes={size}"
    else:
        path = f"{API}/bench/upload"
    label = f"{size / GIB:g} GiB" if size >= GIB else f"{size // MIB} MiB"
    ratios: list[float] = []
    growth: list[float] = []
    direct_speed: list[float] = []
    proxy_speed: list[float] = []
    bad = 0
    for round_no in range(mode.transfer_rounds):
        results: dict[str, loadgen.TransferResult] = {}
        for which in (("direct", "proxy") if round_no % 2 == 0 else ("proxy", "direct")):
            if which == "direct":
                results[which] = run_transfer(direct, path, headers(), direction, size, workdir)
            else:
                with RssSampler(gateway.proc.pid) as sampler:
                    results[which] = run_transfer(gateway, path, headers(), direction, size,
                                                  workdir)
                if sampler.growth_mib is not None:
                    growth.append(sampler.growth_mib)
        for result in results.values():
            if not 200 <= result.status < 300 or result.bytes != size:
                bad += 1
        direct_speed.append(results["direct"].mib_per_s)
        proxy_speed.append(results["proxy"].mib_per_s)
        d = results["direct"].mib_per_s
        ratios.append(results["proxy"].mib_per_s / d if d else 0.0)
    ratio = statistics.median(ratios)
    rows = [Row(
        key=direction, title=f"{direction} {label} through the proxy",
        value=f"{statistics.median(proxy_speed):,.0f} MiB/s", non2xx=bad,
        baseline=f"{direction} {label} {'from' if direction == 'download' else 'to'} the stub "
                 f"engine directly",
        baseline_value=f"{statistics.median(direct_speed):,.0f} MiB/s",
        ratio=ratio, ratio_text=f"{ratio:.2f}",
        target="≥ 0.7" if mode.name == "full" else "—",
        met=(ratio >= 0.7) if mode.name == "full" else None,
        note="" if bad == 0 else "a transfer failed or was short",
    )]
    peak = max(growth) if growth else None
    rows.append(Row(
        key=f"{direction}_rss", title=f"{direction} {label}: gateway peak RSS growth",
        value="n/a (no /proc)" if peak is None else f"{peak:.1f} MiB",
        baseline="RSS before the transfer", baseline_value="—",
        target="< 64 MiB" if mode.name == "full" else "—",
        met=(peak < 64) if (peak is not None and mode.name == "full") else None,
    ))
    return rows


# -- slow and idle peers (bench/slowpeers.py) ----------------------------------------------------


def _slowpeers(command: str, spec: dict[str, Any], workdir: Path) -> subprocess.Popen:
    path = workdir / f"{command}-spec.json"
    path.write_text(json.dumps(spec))
    return subprocess.Popen([sys.executable, str(BENCH_DIR / "slowpeers.py"), command, str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise RuntimeError(f"bench/slowpeers.py said nothing in {timeout:g} s")
    return proc.stdout.readline().strip()


def health_on_new_connection(port: int, timeout: float = 10.0) -> bool:
    """One GET /system/health on a fresh connection (as a load balancer checks); raw socket,
    so the figure is the server's, not an HTTP client's set-up."""
    request = b"GET /api/v1/system/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            answer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.1 200")


def websocket_row(gateway: ServerProcess, mode: Mode, workdir: Path) -> Row:
    """Idle WebSocket connections through a gateway_asgi_middleware echo (the hello plugin):
    the gateway's resident memory per connection."""
    count = 1000 if mode.name == "full" else 200
    before = rss_kib(gateway.proc.pid)
    proc = _slowpeers("websockets", {"url": f"ws://127.0.0.1:{gateway.port}{API}/hello/echo",
                                     "count": count, "seconds": 120}, workdir)
    try:
        ready = _read_line(proc, 180)
        if not ready.startswith("ready "):
            raise RuntimeError(f"unexpected: {ready!r}")
        opened = json.loads(ready[6:])
        time.sleep(1.0)
        after = rss_kib(gateway.proc.pid)
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(60)
    if before is None or after is None or not opened["open"]:
        return Row(key="websocket", title=f"{count:,} idle WebSocket connections",
                   value="n/a (no /proc)", non2xx=opened.get("failed", 0))
    per_kib = (after - before) / opened["open"]
    full = mode.name == "full"
    return Row(
        key="websocket",
        title=f"{count:,} idle WebSocket connections (hello echo via gateway_asgi_middleware): "
              "gateway RSS per connection",
        value=f"{per_kib:.1f} KiB", non2xx=opened["failed"],
        baseline="gateway RSS before connecting", baseline_value=f"{before / 1024:.1f} MiB",
        target="< 64 KiB" if full else "—", met=(per_kib < 64) if full else None,
        extra={"open": opened["open"]})


def siege_row(gateway: ServerProcess, stub: ServerProcess, seed: Seed, mode: Mode, workdir: Path) -> Row:
    """200 signed proxied requests held open by an engine that never answers, plus 300
    connections dribbling their request head: health latency from a new connection each
    time (as a load balancer checks) and another user's proxied GET, throughout."""
    full = mode.name == "full"
    seconds = 15.0 if full else 3.0
    hanging, slow = 200, 300
    proc = _slowpeers("siege", {"port": gateway.port, "path": API + "/hang",
                                "hanging": hanging, "slow_headers": slow,
                                "seconds": seconds + 30}, workdir)
    health_ms: list[float] = []
    health_bad = 0
    other_ok = other_bad = 0
    try:
        hang_port = json.loads(_read_line(proc, 30))["hang_port"]
        victim = FastSigner()
        with httpx.Client(base_url=gateway.base + API, timeout=30) as client:
            r = client.post("/user/engines", json={"name": "stalled"}, headers=victim.headers())
            r.raise_for_status()
            engine = r.json()
        heartbeat(gateway.base, engine["raw_token"], f"http://127.0.0.1:{hang_port}")
        heartbeat(gateway.base, seed.tokens[0], stub.base)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({**victim.headers(int(time.time()) + 10),
                                     "X-Flowork-Engine-ID": engine["id"]}) + "\n")
        proc.stdin.flush()
        if _read_line(proc, 60) != "ready":
            raise RuntimeError("siege did not get ready")
        other = {**seed.signer.headers(), "X-Flowork-Engine-ID": seed.engine_ids[0]}
        other_client = httpx.Client(timeout=5)
        deadline = time.monotonic() + seconds
        probe = 0
        while time.monotonic() < deadline:
            probe += 1
            started = time.perf_counter()
            ok = health_on_new_connection(gateway.port)
            health_ms.append((time.perf_counter() - started) * 1000)
            health_bad += not ok
            if probe % 5 == 0:
                try:
                    r = other_client.get(gateway.base + API + "/bench/echo", headers=other)
                    other_ok += r.status_code == 200
                    other_bad += r.status_code != 200
                except httpx.HTTPError:
                    other_bad += 1
            time.sleep(0.02)
        other_client.close()
    finally:
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        proc.kill()
        proc.wait(30)
    ordered = sorted(health_ms)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    met = p99 < 50 and health_bad == 0 and other_bad == 0
    return Row(
        key="siege",
        title=f"health and another user's proxied GET under {hanging} hanging proxied requests "
              f"+ {slow} slow-header connections ({seconds:g} s)",
        value=f"health p99 {p99:.1f} ms; other user's GETs {other_ok}/{other_ok + other_bad} ok",
        p50=f"{p50:.2f}", p99=f"{p99:.2f}", non2xx=health_bad,
        baseline="—", baseline_value="—",
        target="p99 < 50 ms, all GETs ok" if full else "—", met=met if full else None,
        note="" if other_bad == 0 else f"{other_bad} of the other user's GETs failed")


# -- the suite ----------------------------------------------------------------------------------


ROW_KEYS = ("asgi_hello", "health", "warm", "warm_asgi", "cold", "original", "original_cold",
            "proxy", "proxy_waitress", "authinfo", "postgres", "download", "upload", "websocket", "siege")


class Suite:
    """Starts every server, seeds them, runs the rows, stops everything."""

    def __init__(self, mode: Mode, rows: Sequence[str], workdir: Path, postgres_url: str) -> None:
        self.mode = mode
        self.rows_wanted = list(rows)
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.servers: list[ServerProcess] = []
        self.rows: list[Row] = []
        self.secret = secrets.token_hex(24)

    def _gateway(self, name: str, database_url: str, argv: list[str] | None = None,
                 extra_env: dict[str, str] | None = None) -> ServerProcess:
        env = clean_environment({"DATABASE_URL": database_url, **(extra_env or {})},
                                secret=self.secret)
        server = ServerProcess(argv or gateway_argv(), env, self.workdir, name=name)
        self.servers.append(server)
        return server

    def _python_server(self, name: str, script: str, *args: str) -> ServerProcess:
        argv = [sys.executable, str(BENCH_DIR / script), "--threads", str(self.mode.threads),
                *args]
        server = ServerProcess(argv, clean_environment({}, secret=None), self.workdir, name=name)
        self.servers.append(server)
        return server

    def wants(self, *keys: str) -> bool:
        return any(k in self.rows_wanted for k in keys)

    def run(self) -> list[Row]:
        mode, work = self.mode, self.workdir
        sqlite = f"sqlite:///{(work / 'main.db').as_posix()}"
        many_db = f"sqlite:///{(work / 'many.db').as_posix()}"
        original_db = f"sqlite:///{(work / 'original.db').as_posix()}"
        waitress_db = f"sqlite:///{(work / 'waitress.db').as_posix()}"
        pg_context = postgres_database(self.postgres_url) if self.wants("postgres") \
            else contextlib.nullcontext(None)
        try:
            with pg_context as pg_url:
                if self.wants("authinfo"):  # the filler engines go in before that server starts
                    add_filler_engines(many_db, mode.many_engines - 10)
                ceiling = self._python_server("ceiling", "ceiling.py")
                ceiling_asgi = self._python_server("ceiling-asgi", "ceiling.py", "--asgi")
                stub = self._python_server("stub-engine", "ceiling.py", "--max-body", str(4 * GIB))
                # hello: the example plugin's WebSocket echo (gateway_asgi_middleware) for the
                # idle-WebSocket row.
                gateway = self._gateway("gateway", sqlite,
                                        extra_env={"FLOWORK_PLUGINS": "bundled,hello"})
                many = self._gateway("gateway-10k", many_db) if self.wants("authinfo") else None
                original = None
                if self.wants("original", "original_cold"):
                    original = self._gateway(
                        "gateway-original", original_db,
                        [sys.executable, str(BENCH_DIR / "original_design.py"),
                         "--threads", str(mode.threads)],
                        {"ECC_BACKEND_CLASS": "eth_keys.backends.NativeECCBackend"})
                waitress_gw = None
                if self.wants("proxy_waitress"):  # serve --server waitress, its default threads
                    waitress_gw = self._gateway(
                        "gateway-waitress", waitress_db,
                        gateway_argv(threads=mode.threads, server="waitress"))
                pg = self._gateway("gateway-postgres", pg_url) if pg_url else None
                for server in self.servers:
                    server.wait_up()
                self.ceiling_asgi = ceiling_asgi
                self._rows(ceiling, stub, gateway, many, original, waitress_gw, pg,
                           postgres_missing=self.wants("postgres") and pg_url is None)
        finally:
            for server in self.servers:
                server.stop()
        return self.rows

    def _attempt(self, keys: Sequence[str], fn: Callable[[], Row | list[Row]]) -> None:
        if not self.wants(*keys):
            return
        started = time.monotonic()
        try:
            result = fn()
        except Exception as exc:  # a crashed row is reported, the others still run
            self.rows.append(Row(key=keys[0], title=keys[0], failed=f"{type(exc).__name__}: {exc}"))
        else:
            self.rows.extend(result if isinstance(result, list) else [result])
        print(f"  {', '.join(keys)}: {time.monotonic() - started:.1f} s", file=sys.stderr,
              flush=True)

    def _rows(self, ceiling: ServerProcess, stub: ServerProcess, gateway: ServerProcess,
              many: ServerProcess | None, original: ServerProcess | None,
              waitress_gw: ServerProcess | None, pg: ServerProcess | None,
              postgres_missing: bool) -> None:
        mode, work = self.mode, self.workdir
        full = mode.name == "full"
        seed = seed_gateway(gateway.base)
        many_seed = seed_gateway(many.base) if many else None
        orig_seed = seed_gateway(original.base) if original else None
        waitress_seed = seed_gateway(waitress_gw.base) if waitress_gw else None
        pg_seed = seed_gateway(pg.base) if pg else None
        engines = API + "/user/engines"
        health = API + "/system/health"

        def signed(s: Seed, extra: dict[str, str] | None = None) -> HeaderFactory:
            return lambda: [{**s.signer.headers(), **(extra or {})}]

        def cold(server: ServerProcess, estimate_key: str, extra: dict[str, str] | None = None
                 ) -> HeaderFactory:
            def make() -> list[dict[str, str]]:
                estimate = self._subject_rps(estimate_key, 3000.0)
                count = int(estimate * 1.3 * (mode.duration + mode.warmup)) + 500
                return fresh_header_sets(min(count, 150_000), server.base, extra or {})
            return make

        ceiling_side = Side("bare Falcon + waitress (ceiling)", ceiling, engines)
        asgi_ceiling_side = Side("bare Falcon ASGI + uvicorn (default server's ceiling)",
                                 self.ceiling_asgi, engines)
        self._attempt(["asgi_hello"], lambda: compare(
            "asgi_hello", "baseline: bare Falcon ASGI hello under the default server (uvicorn)",
            Side("ceiling", ceiling, health), Side("ceiling-asgi", self.ceiling_asgi, health),
            mode, work))
        self._attempt(["health"], lambda: compare(
            "health", "GET /system/health",
            Side("ceiling", ceiling, health), Side("gateway", gateway, health),
            mode, work, 1.0 if full else None))
        self._attempt(["warm"], lambda: compare(
            "warm", "signed GET /user/engines, cache warm (SQLite)",
            ceiling_side, Side("gateway", gateway, engines, signed(seed)),
            mode, work, 1.0 if full else None))
        self._attempt(["warm_asgi"], lambda: compare(
            "warm_asgi", "signed GET /user/engines, cache warm (SQLite), vs the default server's hello",
            asgi_ceiling_side, Side("gateway", gateway, engines, signed(seed)),
            mode, work, 0.5 if full else None))
        self._attempt(["cold"], lambda: compare(
            "cold", "signed GET /user/engines, fresh signature per request (SQLite)",
            ceiling_side, Side("gateway", gateway, engines, cold(gateway, "warm")),
            mode, work))
        if original is not None and orig_seed is not None:
            original_side = Side("original design: pure-Python recovery, no cache", original,
                                 engines, signed(orig_seed))
            self._attempt(["original"], lambda: compare(
                "original", "speed-up: signed GET /user/engines, ours (cache warm) vs original",
                original_side, Side("gateway", gateway, engines, signed(seed)),
                mode, work, 30 if full else None))
            self._attempt(["original_cold"], lambda: compare(
                "original_cold",
                "speed-up: signed GET /user/engines, ours (fresh signatures) vs original",
                original_side, Side("gateway", gateway, engines, cold(gateway, "warm")),
                mode, work))
        proxy_headers = {"X-Flowork-Engine-ID": seed.engine_ids[0]}

        def beat() -> None:
            heartbeat(gateway.base, seed.tokens[0], stub.base)

        proxied_path = API + "/bench/echo"

        def proxied_row() -> Row:
            beat()
            return compare(
                "proxy", "proxied signed GET (small JSON, engine by id) to the stub engine",
                ceiling_side, Side("gateway", gateway, proxied_path, signed(seed, proxy_headers)),
                mode, work, 0.8 if full else None)

        self._attempt(["proxy"], proxied_row)
        if waitress_gw is not None and waitress_seed is not None:
            waitress_proxy_headers = {"X-Flowork-Engine-ID": waitress_seed.engine_ids[0]}

            def proxied_waitress_row() -> Row:
                heartbeat(waitress_gw.base, waitress_seed.tokens[0], stub.base)
                return compare(
                    "proxy_waitress",
                    "proxied signed GET (small JSON, engine by id) under `serve --server waitress`",
                    ceiling_side, Side("gateway (waitress)", waitress_gw, proxied_path,
                                       signed(waitress_seed, waitress_proxy_headers)),
                    mode, work, 0.45 if full else None)

            self._attempt(["proxy_waitress"], proxied_waitress_row)
        if many is not None and many_seed is not None:
            info = API + "/engine/get-engine-auth-info"
            self._attempt(["authinfo"], lambda: compare(
                "authinfo", f"GET /engine/get-engine-auth-info, {mode.many_engines:,} engines",
                Side("the same with 10 engines", gateway, info,
                     lambda: [{"X-Engine-Token": seed.tokens[0]}]),
                Side("gateway", many, info, lambda: [{"X-Engine-Token": many_seed.tokens[0]}]),
                mode, work, 0.8 if full else None))
        if pg is not None and pg_seed is not None:
            self._attempt(["postgres"], lambda: compare(
                "postgres", "signed GET /user/engines, cache warm (PostgreSQL)",
                ceiling_side, Side("gateway", pg, engines, signed(pg_seed)),
                mode, work, 0.8 if full else None))
        elif postgres_missing:
            self.rows.append(Row(key="postgres", title="signed GET /user/engines (PostgreSQL)",
                                 value="skipped", note=f"no PostgreSQL at {self.postgres_url}"))

        def transfer_headers() -> dict[str, str]:
            return {**seed.signer.headers(), **proxy_headers}

        for direction in ("download", "upload"):
            def transfer_rows(direction: str = direction) -> list[Row]:
                beat()
                return compare_transfer(direction, stub, gateway, transfer_headers, mode, work)

            self._attempt([direction], transfer_rows)

        self._attempt(["websocket"], lambda: websocket_row(gateway, mode, work))
        self._attempt(["siege"], lambda: siege_row(gateway, stub, seed, mode, work))

    def _subject_rps(self, key: str, default: float) -> float:
        for row in self.rows:
            if row.key == key and "subject_rps" in row.extra:
                return float(row.extra["subject_rps"])
        return default


# -- output -----------------------------------------------------------------------------------


def render_table(rows: Sequence[Row]) -> str:
    head = ("| row | result | p50 ms | p99 ms | non-2xx | server CPU µs/req (row / baseline) "
            "| baseline | baseline result | ratio | target | met |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|"]
    for r in rows:
        if r.failed:
            lines.append(f"| {r.title} | CRASHED: {r.failed} | | | | | | | | | ✗ |")
            continue
        met = "—" if r.met is None else ("pass" if r.met else "**miss**")
        errors = f"{r.non2xx}" + (f" (+{r.errors} socket errors)" if r.errors else "")
        title = r.title + (f" ({r.note})" if r.note else "")
        lines.append(f"| {title} | {r.value} | {r.p50} | {r.p99} | {errors} | {r.cpu} "
                     f"| {r.baseline} | {r.baseline_value} | {r.ratio_text} | {r.target} "
                     f"| {met} |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def render_document(mode: Mode, table: str, started: dt.datetime, elapsed: float) -> str:
    tool = "wrk (-t1)" if use_wrk() else "bench/loadgen.py (Python, threads)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import falcon
    import waitress

    lines = [
        "# Performance",
        "",
        "Generated by `.venv/bin/python bench/run.py"
        + (" --smoke" if mode.name == "smoke" else "") + "`; do not edit by hand. "
        "The analysis at the end is kept in `docs/performance-notes.md`.",
        "",
        f"- **Date**: {started:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s; mode **{mode.name}**"
        + (" (short runs, targets not asserted)" if mode.name == "smoke" else ""),
        f"- **Machine**: {platform.system()} {platform.machine()}, {cpu_model()}, "
        f"{os.cpu_count()} CPUs (shared; load average {load:.2f} at start); "
        f"Python {platform.python_version()}, Falcon {falcon.__version__}, "
        f"waitress {getattr(waitress, '__version__', '') or _dist_version('waitress')}",
        f"- **Method**: every server is its own process on 127.0.0.1: the gateways under "
        f"`flowork-gateway serve` (uvicorn, its default worker threads; the waitress proxy "
        f"row's under `serve --server waitress` with {mode.threads} threads), the baselines under "
        f"waitress with `serve --server waitress`'s settings and {mode.threads} threads "
        f"(`ceiling-asgi`: uvicorn with `serve`'s settings); load from {tool} in "
        f"another process, {mode.connections} keep-alive connections, closed loop; "
        f"{mode.duration:g} s per side after {mode.warmup:g} s warm-up, {mode.rounds} "
        f"round(s) alternating baseline and subject; ratio = median of per-round "
        f"subject/baseline ratios; result and latencies are medians over rounds. "
        f"Transfers: one streamed request at a time, {mode.transfer_rounds} round(s); RSS "
        f"sampled from /proc every 10 ms. Absolute figures vary with the machine's load: "
        f"read the ratios.",
        "",
        table,
        "",
    ]
    if NOTES_FILE.exists():
        lines += ["## Analysis", "", NOTES_FILE.read_text().strip(), ""]
    return "\n".join(lines)


def refresh_notes(document: Path) -> None:
    """Swap the Analysis section of a generated document for the current notes file."""
    head = document.read_text().split("\n## Analysis\n", 1)[0].rstrip("\n")
    notes = NOTES_FILE.read_text().strip() if NOTES_FILE.exists() else ""
    document.write_text(head + ("\n\n## Analysis\n\n" + notes if notes else "") + "\n")


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Flowork Gateway benchmark suite")
    parser.add_argument("--smoke", action="store_true", help="about a minute; no targets")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the document here (e.g. docs/PERFORMANCE.md)")
    parser.add_argument("--rows", default=",".join(ROW_KEYS),
                        help=f"comma-separated subset of: {', '.join(ROW_KEYS)}")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "FLOWORK_BENCH_POSTGRES_URL", os.environ.get("FLOWORK_TEST_POSTGRES_URL", DEFAULT_POSTGRES)),
        help="admin URL of a PostgreSQL server (a database is created and dropped)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--python-load", action="store_true",
                        help="use bench/loadgen.py even when wrk is installed")
    parser.add_argument("--refresh-notes", type=Path, metavar="DOC",
                        help="only replace the Analysis of an already generated DOC with "
                             "docs/performance-notes.md (no measuring)")
    args = parser.parse_args(argv)
    if args.refresh_notes:
        refresh_notes(args.refresh_notes)
        return 0
    global USE_WRK
    USE_WRK = not args.python_load
    mode = SMOKE if args.smoke else FULL
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROW_KEYS))
    if unknown:
        parser.error(f"unknown rows {unknown}")
    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="flowork-bench-"))
    print(f"bench: mode {mode.name}, work directory {workdir}", file=sys.stderr, flush=True)
    try:
        results = Suite(mode, rows, workdir, args.postgres_url).run()
    finally:
        if args.keep:
            print(f"bench: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    table = render_table(results)
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(render_document(mode, table, started, time.monotonic() - clock))
    bad = [r for r in results if r.failed or r.non2xx or r.errors]
    for r in bad:
        print(f"bench: row {r.key!r} failed: {r.failed or f'{r.non2xx} non-2xx, {r.errors} errors'}",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
