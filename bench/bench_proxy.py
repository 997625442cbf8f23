"""The proxy's cost: proxied small JSON against the gateway's own health route and against the
engine directly, and big transfers through the proxy (throughput and gateway RSS growth).

    .venv/bin/python bench/bench_proxy.py                 # 1 GiB transfers, about 3 minutes
    .venv/bin/python bench/bench_proxy.py --smoke         # 32 MiB transfers, short rounds
    .venv/bin/python bench/bench_proxy.py --bytes 268435456 --rounds 5

Three processes on 127.0.0.1: the stub engine (``bench/ceiling.py``, a bare Falcon app), the
gateway (bundled plugins, SQLite, waitress with ``flowork-gateway serve``'s settings), and the
load generator (``wrk`` when installed, else ``bench/loadgen.py``). The bench user owns an
engine whose heartbeat reports the stub's URL; requests carry one reused legacy signature (as
the GUI sends them) and ``X-Flowork-Engine-ID``. Within each round the three request rows run
in rotated order; a ratio is the median of its per-round ratios (the machine is shared and
noisy). Transfers alternate direct and proxied, one streamed request at a time, RSS of the
gateway sampled from /proc every 10 ms.

The gateway runs under this script's ``serve-gateway`` mode rather than ``flowork-gateway
serve`` only to raise waitress's own request-body cap (``max_request_body_size``, 1 GiB by
default, refusing bodies of 1 GiB or more before the app sees them) above the upload size.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import loadgen  # noqa: E402
import run as suite  # noqa: E402

API = "/api/v1"
GIB = 1 << 30
MIB = 1 << 20


def serve_gateway(argv: list[str]) -> int:
    """Child mode: the bundled gateway from the environment under waitress."""
    import waitress

    from gateway_kernel import cli, create_gateway

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=cli.DEFAULT_THREADS)
    parser.add_argument("--max-body", type=int, required=True)
    args = parser.parse_args(argv)
    gateway = create_gateway()
    gateway.migrate()
    gateway.start()
    gc.collect()  # as `serve` does
    gc.freeze()
    options = cli.waitress_options()
    options["max_request_body_size"] = args.max_body
    try:
        waitress.serve(gateway, host=args.host, port=args.port, threads=args.threads, **options)
    finally:
        gateway.close()
    return 0


def request_rows(gateway: suite.Server, stub: suite.Server, seed: suite.Seed, mode: suite.Mode,
                 work: Path) -> list[list[str]]:
    """Engine direct, gateway health, gateway proxy: rotated each round; median ratios."""
    engine_headers = {"X-Flowork-Engine-ID": seed.engine_ids[0]}
    echo = API + "/bench/echo"

    def signed() -> list[dict[str, str]]:
        return [{**seed.signer.headers(), **engine_headers}]

    sides = {
        "direct": suite.Side("stub engine directly: GET small JSON", stub, echo, signed),
        "health": suite.Side("gateway: GET /system/health (its own route)", gateway,
                             API + "/system/health"),
        "proxy": suite.Side("gateway: proxied signed GET small JSON", gateway, echo, signed),
    }
    runs: dict[str, list[loadgen.LoadResult]] = {k: [] for k in sides}
    for round_no in range(mode.rounds):
        keys = list(sides)
        keys = keys[round_no % 3:] + keys[:round_no % 3]
        for key in keys:
            runs[key].append(suite.measure(sides[key], mode, work))
    proxy_vs = {
        base: statistics.median(p.rps / b.rps if b.rps else 0.0
                                for p, b in zip(runs["proxy"], runs[base], strict=True))
        for base in ("direct", "health")
    }
    rows = []
    for key, side in sides.items():
        results = runs[key]
        bad = sum(r.non2xx + r.errors for r in results)
        ratio = {"direct": "1.00 (baseline)", "health": "—",
                 "proxy": f"{proxy_vs['direct']:.2f} of direct, "
                          f"{proxy_vs['health']:.2f} of health"}[key]
        rows.append([side.label, f"{statistics.median(r.rps for r in results):,.0f} req/s",
                     f"{statistics.median(r.p50_ms for r in results):.2f}",
                     f"{statistics.median(r.p99_ms for r in results):.2f}", str(bad), ratio])
    return rows


def transfer_rows(gateway: suite.Server, stub: suite.Server, seed: suite.Seed, mode: suite.Mode,
                  work: Path) -> list[list[str]]:
    engine_headers = {"X-Flowork-Engine-ID": seed.engine_ids[0]}
    rows = []
    for direction in ("download", "upload"):
        suite.heartbeat(gateway.base, seed.tokens[0], stub.base)
        speed, rss = suite.compare_transfer(
            direction, stub, gateway, lambda: {**seed.signer.headers(), **engine_headers},
            mode, work)
        rows.append([speed.title + (f" ({speed.note})" if speed.note else ""), speed.value,
                     "", "", str(speed.non2xx),
                     f"{speed.ratio_text} of direct ({speed.baseline_value})"])
        rows.append([rss.title, rss.value, "", "", "", "target < 64 MiB"])
    return rows


def render(rows: list[list[str]]) -> str:
    lines = ["| measurement | result | p50 ms | p99 ms | failed | ratio |",
             "|---|---:|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-gateway"]:
        return serve_gateway(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short rounds, 32 MiB transfers")
    parser.add_argument("--bytes", type=int, default=None, help="transfer size (default 1 GiB)")
    parser.add_argument("--rounds", type=int, default=None, help="request rounds")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads per server")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)

    base = suite.SMOKE if args.smoke else suite.FULL
    size = args.bytes or (32 * MIB if args.smoke else GIB)
    mode = suite.Mode(
        name=base.name, duration=args.duration or base.duration, warmup=base.warmup,
        rounds=args.rounds or (1 if args.smoke else 3), transfer_bytes=size,
        transfer_rounds=1 if args.smoke else 2, many_engines=0, threads=args.threads,
        connections=args.connections,
    )
    work = Path(tempfile.mkdtemp(prefix="flowork-bench-proxy-"))
    print(f"bench_proxy: work directory {work}", file=sys.stderr, flush=True)
    servers: list[suite.Server] = []
    try:
        stub = suite.Server("stub-engine", [sys.executable, str(BENCH_DIR / "ceiling.py"),
                                            "--threads", str(mode.threads),
                                            "--max-body", str(size + MIB)],
                            suite.clean_env({}), work)
        servers.append(stub)
        env = suite.clean_env({"DATABASE_URL": f"sqlite:///{(work / 'gateway.db').as_posix()}",
                               "FLOWORK_PROXY_MAX_UPLOAD_BYTES": str(size + MIB),
                               "FLOWORK_PROXY_READ_TIMEOUT_S": "120",
                               "FLOWORK_ENGINE_ONLINE_S": "86400"})
        gateway = suite.Server("gateway", [sys.executable, str(Path(__file__).resolve()),
                                           "serve-gateway", "--threads", str(mode.threads),
                                           "--max-body", str(size + MIB)], env, work)
        servers.append(gateway)
        for server in servers:
            server.wait_up()
        seed = suite.seed_gateway(gateway.base, own_engines=1, other_users=0)
        suite.heartbeat(gateway.base, seed.tokens[0], stub.base)
        rows = request_rows(gateway, stub, seed, mode, work)
        rows += transfer_rows(gateway, stub, seed, mode, work)
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    tool = "wrk" if loadgen.wrk_path() else "bench/loadgen.py"
    print(f"Proxy benchmark ({mode.name}): {mode.threads} waitress threads per server, "
          f"{mode.connections} connections from {tool}, {mode.duration:g} s per measurement, "
          f"{mode.rounds} round(s); transfers of {size / MIB:,.0f} MiB, "
          f"{mode.transfer_rounds} round(s).\n")
    print(render(rows))
    return 1 if any(row[4] not in ("", "0") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
