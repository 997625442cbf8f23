"""Soak: two gateway instances on one PostgreSQL database under steady, bounded load.

    .venv/bin/python bench/soak.py --seconds 20              # CI
    .venv/bin/python bench/soak.py --seconds 300 --clients 8 --output soak.md

Everything is on loopback and stops by itself. A fresh database is created on the PostgreSQL
server given by --postgres (default: FLOWORK_TEST_POSTGRES_URL, else the local server) and
dropped afterwards. Two ``flowork-gateway serve`` processes run on it (threads=4, pool of 4
each); a stub engine in this process answers proxied requests. Client threads, each a user
with an engine, loop over: a signed request, a proxied request, an engine heartbeat,
alternating between the two instances. Each user re-signs every minute.

Reported as a markdown table (stdout, and --output): requests and errors per kind, p50/p99
latency, each instance's RSS and the database's connection count at start and end (and the
peak). Exit status 1 if any request failed (a non-2xx or a transport error) or the connection
count ever exceeded the two pools.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support: the helpers shared with the tests

from gateway_kernel.testing import create_postgres_database  # noqa: E402
from gateway_plugins.auth_crypto.signing import Signer  # noqa: E402
from tests.support.procs import GatewayProcess  # noqa: E402
from tests.support.stub_engine import StubEngine  # noqa: E402

THREADS = 4
POOL_SIZE = 4
RESIGN_S = 60.0
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class User:
    signer: Signer
    engine_id: str
    engine_token: str
    headers: dict[str, str] = field(default_factory=dict)
    signed_at: float = 0.0

    def auth(self) -> dict[str, str]:
        now = time.monotonic()
        if now - self.signed_at > RESIGN_S:
            self.headers = self.signer.headers()
            self.signed_at = now
        return self.headers


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            if error is not None:
                self.errors[kind] += 1
                if len(self.examples) < 5:
                    self.examples.append(f"{kind}: {error}")


def connection_count(admin_url: str, database: str) -> int:
    import psycopg2

    parsed = urlparse(admin_url)
    conn = psycopg2.connect(dbname=parsed.path.lstrip("/") or "postgres",
                            user=parsed.username or "postgres", password=parsed.password,
                            host=parsed.hostname or "127.0.0.1", port=parsed.port or 5432,
                            connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def set_up_user(gateway: GatewayProcess, stub: StubEngine) -> User:
    signer = Signer.new()
    r = httpx.post(gateway.url("/user/engines"), json={"name": "soak engine"},
                   headers=signer.headers(), timeout=30)
    r.raise_for_status()
    user = User(signer, r.json()["id"], r.json()["raw_token"])
    r = httpx.post(gateway.url("/engine/heartbeat"), json={"url": stub.url},
                   headers={"X-Engine-Token": user.engine_token}, timeout=30)
    r.raise_for_status()
    return user


def client_loop(user: User, gateways: list[GatewayProcess], stub: StubEngine, stats: Stats,
                stop: threading.Event) -> None:
    turn = 0
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            gateway = gateways[turn % len(gateways)]
            turn += 1
            requests = (
                ("signed", "GET", gateway.url("/user/engines" if turn % 2 else "/auth/profile"),
                 user.auth(), None),
                ("proxied", "GET", gateway.url(f"/workflows/soak-{turn % 7}"),
                 {**user.auth(), "X-Flowork-Engine-ID": user.engine_id}, None),
                ("heartbeat", "POST", gateway.url("/engine/heartbeat"),
                 {"X-Engine-Token": user.engine_token}, {"url": stub.url, "vitals": {"n": turn}}),
            )
            for kind, method, url, headers, body in requests:
                started = time.perf_counter()
                error = None
                try:
                    r = http.request(method, url, headers=headers, json=body)
                    if not 200 <= r.status_code < 300:
                        error = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    error = repr(exc)
                stats.record(kind, time.perf_counter() - started, error)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def kib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f} MiB"


def soak(seconds: float, clients: int, admin_url: str) -> tuple[str, bool]:
    url, drop = create_postgres_database(admin_url)
    database = urlparse(url).path.lstrip("/")
    logs = Path(tempfile.mkdtemp(prefix="flowork-soak-"))
    settings = {"DATABASE_URL": url, "FLOWORK_DB_POOL_SIZE": str(POOL_SIZE),
                "FLOWORK_ENGINE_NETWORKS": "127.0.0.0/8"}
    gateways: list[GatewayProcess] = []
    stats = Stats()
    stop = threading.Event()
    peak = {"connections": 0}
    try:
        with StubEngine() as stub:
            gateways = [GatewayProcess.start(settings, logs, threads=THREADS) for _ in range(2)]
            users = [set_up_user(gateways[i % 2], stub) for i in range(clients)]
            threads = [threading.Thread(target=client_loop, args=(u, gateways, stub, stats, stop),
                                        daemon=True) for u in users]
            for thread in threads:
                thread.start()
            time.sleep(min(2.0, seconds / 5))  # warm: pools filled, caches primed
            start_rss = [g.rss_kib() for g in gateways]
            start_connections = connection_count(admin_url, database)
            with stats.lock:
                for values in stats.latencies.values():
                    values.clear()
                stats.errors.clear()
            began = time.monotonic()
            while time.monotonic() - began < seconds:
                peak["connections"] = max(peak["connections"], connection_count(admin_url, database))
                time.sleep(1.0)
            end_rss = [g.rss_kib() for g in gateways]
            end_connections = connection_count(admin_url, database)
            elapsed = time.monotonic() - began
            stop.set()
            for thread in threads:
                thread.join(60)
    finally:
        stop.set()
        for gateway in gateways:
            gateway.stop()
        drop()

    bound = POOL_SIZE * len(gateways)
    total = sum(len(v) for v in stats.latencies.values())
    errors = sum(stats.errors.values())
    everything = [x for v in stats.latencies.values() for x in v]
    lines = [
        f"## Soak: 2 instances on PostgreSQL, {clients} clients, {elapsed:.0f} s",
        "",
        "| kind | requests | errors | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in ("signed", "proxied", "heartbeat"):
        values = stats.latencies.get(kind, [])
        lines.append(f"| {kind} | {len(values)} | {stats.errors.get(kind, 0)} | "
                     f"{statistics.median(values) * 1000 if values else float('nan'):.1f} | "
                     f"{percentile(values, 0.99) * 1000:.1f} |")
    lines.append(f"| **all** | {total} ({total / elapsed:.0f}/s) | {errors} | "
                 f"{statistics.median(everything) * 1000 if everything else float('nan'):.1f} | "
                 f"{percentile(everything, 0.99) * 1000:.1f} |")
    lines += [
        "",
        "| resource | start | end |",
        "|---|---:|---:|",
        f"| RSS instance A | {kib(start_rss[0])} | {kib(end_rss[0])} |",
        f"| RSS instance B | {kib(start_rss[1])} | {kib(end_rss[1])} |",
        f"| DB connections (peak {peak['connections']}, bound {bound}) | {start_connections} | "
        f"{end_connections} |",
    ]
    if stats.examples:
        lines += ["", "First errors:", *[f"- `{e}`" for e in stats.examples]]
    ok = errors == 0 and total > 0 and max(peak["connections"], end_connections) <= bound
    lines += ["", f"Result: {'PASS' if ok else 'FAIL'} (errors must be 0, connections ≤ {bound})"]
    return "\n".join(lines) + "\n", ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="measured duration")
    parser.add_argument("--clients", type=int, default=6, help="concurrent users (threads)")
    parser.add_argument("--postgres", default=os.environ.get("FLOWORK_TEST_POSTGRES_URL")
                        or DEFAULT_POSTGRES, help="admin URL of the PostgreSQL server to use")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    report, ok = soak(args.seconds, args.clients, args.postgres)
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
