"""Throughput of GET /engine/get-engine-auth-info with 10 and with 10,000 engines.

    .venv/bin/python bench/bench_engines.py [--smoke] [--database-url postgresql://…]

The engine token is looked up by its digest in a unique index, so the number of engines in
the table should not matter: the ratio printed at the end should stay near 1.0. Each size gets
its own database (SQLite files by default; with ``--database-url`` one fresh PostgreSQL
database per size, created and dropped here); rounds alternate between the two sizes and the
median is reported, because the machine is shared and noisy. Requests go in-process through
Falcon's test client (token scheme, engines and sharing plugins, real database), so this
measures the gateway's own work, not the network.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import falcon.testing

from gateway_kernel import Gateway, create_gateway
from gateway_kernel.accounts import Account
from gateway_kernel.db import deactivate, is_postgres
from gateway_plugins.auth_crypto.signing import Signer
from gateway_plugins.engines.models import Engine

PLUGINS = "auth_crypto,auth_internal,engines,sharing"
API = "/api/v1"


def build(url: str, engines: int) -> tuple[Gateway, falcon.testing.TestClient, str]:
    """A migrated gateway whose table holds ``engines`` engines; (gateway, client, token)."""
    gateway = create_gateway(environ={}, settings={"DATABASE_URL": url, "FLOWORK_PLUGINS": PLUGINS})
    gateway.migrate()
    client = falcon.testing.TestClient(gateway)
    owner, guest = Signer.new(), Signer.new()
    r = client.simulate_post(f"{API}/user/engines", json={"name": "target"},
                             headers=owner.headers())
    engine = r.json
    # The target engine is shared with one user, as engines usually are.
    client.simulate_post(f"{API}/engines/{engine['id']}/shares",
                         json={"share_with_identifier": guest.address}, headers=owner.headers())
    token = gateway.activate()
    try:
        owners = []
        for _ in range(max(1, min(100, engines // 100))):
            address = "0x" + secrets.token_hex(20)
            owners.append(gateway.ensure_account(address).id)
        rows = [{"id": str(uuid.uuid4()), "owner": owners[i % len(owners)], "name": f"e{i}",
                 "token_digest": secrets.token_hex(32)} for i in range(engines - 1)]
        with gateway.db.atomic():
            for start in range(0, len(rows), 1000):
                Engine.insert_many(rows[start:start + 1000]).execute()
        if is_postgres(gateway.db):
            gateway.db.execute_sql("ANALYZE")
        assert Engine.select().count() == engines
        assert Account.select().count() >= 2
    finally:
        deactivate(token)
    return gateway, client, engine["raw_token"]


def seconds_per_request(call: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count


def queries_per_request(call: Callable[[], object]) -> int:
    """SQL statements one request runs (peewee logs each at DEBUG)."""
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger("peewee")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        call()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return len(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="few iterations (CI)")
    parser.add_argument("--database-url", help="PostgreSQL admin URL (default: SQLite files)")
    args = parser.parse_args(argv)
    sizes = (10, 1_000) if args.smoke else (10, 10_000)
    count, rounds = (50, 3) if args.smoke else (2_000, 7)

    drops: list[Callable[[], None]] = []
    gateways: list[Gateway] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            setups = {}
            for size in sizes:
                if args.database_url:
                    from gateway_kernel.testing import create_postgres_database

                    url, drop = create_postgres_database(args.database_url)
                    drops.append(drop)
                else:
                    url = f"sqlite:///{Path(tmp, f'engines-{size}.db').as_posix()}"
                gateway, client, engine_token = build(url, size)
                gateways.append(gateway)
                headers = {"X-Engine-Token": engine_token}

                def call(client=client, headers=headers) -> None:
                    r = client.simulate_get(f"{API}/engine/get-engine-auth-info", headers=headers)
                    assert r.status_code == 200, r.text

                for _ in range(20):  # warm caches and connections
                    call()
                setups[size] = (call, queries_per_request(call))
            samples: dict[int, list[float]] = {size: [] for size in sizes}
            for _ in range(rounds):
                for size in sizes:
                    samples[size].append(seconds_per_request(setups[size][0], count))
        finally:
            for gateway in gateways:
                gateway.close()
            for drop in drops:
                drop()

    backend = "PostgreSQL" if args.database_url else "SQLite"
    medians = {size: statistics.median(s) for size, s in samples.items()}
    print(f"GET /engine/get-engine-auth-info, {backend}, {count} requests x {rounds} rounds "
          f"(median)\n")
    print("| engines in table | requests/s | µs per request | SQL per request |")
    print("|---:|---:|---:|---:|")
    for size in sizes:
        seconds = medians[size]
        print(f"| {size:,} | {1 / seconds:,.0f} | {seconds * 1e6:,.0f} | {setups[size][1]} |")
    small, large = sizes
    print(f"\nthroughput ratio {large:,} / {small:,} engines: "
          f"{medians[small] / medians[large]:.2f} (1.00 = no slowdown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
