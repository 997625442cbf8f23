"""The proxy's cost: a proxied small GET on each server against a bare Falcon hello under
waitress, and big transfers through the proxy against the engine directly (throughput, gateway
RSS growth, temporary files).

    .venv/bin/python bench/bench_proxy.py                 # 1 GiB transfers, a few minutes
    .venv/bin/python bench/bench_proxy.py --smoke         # 32 MiB transfers, short rounds
    .venv/bin/python bench/bench_proxy.py --bytes 268435456 --rounds 5

Processes on 127.0.0.1: the baseline (``bench/ceiling.py``: a bare Falcon hello under waitress
with ``serve``'s settings), the stub engine (the same app's stub sink), the gateway under the
default server (``flowork-gateway serve``) and the gateway under ``serve --server waitress``
(one SQLite database for both), and the load generator (``wrk`` when installed, else
``bench/loadgen.py``). The bench user owns an engine whose heartbeat reports the stub's URL;
requests carry one reused legacy signature (as the GUI sends them) and
``X-Flowork-Engine-ID``. Within each round the request rows run in rotated order; a ratio is
the median of its per-round ratios (the machine is shared and noisy). Transfers alternate
direct and proxied, one streamed request at a time; during each proxied transfer the gateway's
RSS and its open temporary files (descriptors under its own ``TMPDIR``) are sampled every 10 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))  # tests.support: the helpers shared with the tests

import loadgen  # noqa: E402
import run as suite  # noqa: E402

from tests.support.procs import ServerProcess, clean_environment, gateway_argv  # noqa: E402

API = "/api/v1"
GIB = 1 << 30
MIB = 1 << 20


class TempFileSampler:
    """Most descriptors ``pid`` held at once on files under ``directory`` (Linux /proc)."""

    def __init__(self, pid: int, directory: Path) -> None:
        self.pid = pid
        self.prefix = str(directory)
        self.peak = 0
        self.available = Path(f"/proc/{pid}/fd").exists()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self) -> int:
        count = 0
        try:
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                try:
                    if os.readlink(f"/proc/{self.pid}/fd/{fd}").startswith(self.prefix):
                        count += 1
                except OSError:
                    continue
        except OSError:
            return 0
        return count

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._count())

    def __enter__(self) -> TempFileSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(5)


def request_rows(ceiling: ServerProcess, gateways: dict[str, ServerProcess], seed: suite.Seed,
                 mode: suite.Mode, work: Path) -> list[list[str]]:
    """Waitress hello and the proxied GET on each server, rotated each round; median ratios."""
    engine_headers = {"X-Flowork-Engine-ID": seed.engine_ids[0]}
    echo = API + "/bench/echo"

    def signed() -> list[dict[str, str]]:
        return [{**seed.signer.headers(), **engine_headers}]

    sides = {"hello": suite.Side("baseline: bare Falcon hello under waitress", ceiling,
                                 API + "/system/health")}
    for name, server in gateways.items():
        sides[name] = suite.Side(f"proxied signed GET, small JSON ({name})", server, echo, signed)
    runs: dict[str, list[loadgen.LoadResult]] = {k: [] for k in sides}
    for round_no in range(mode.rounds):
        keys = list(sides)
        shift = round_no % len(keys)
        for key in keys[shift:] + keys[:shift]:
            runs[key].append(suite.measure(sides[key], mode, work))
    targets = {"default server": 0.8, "waitress": 0.45}
    rows = []
    for key, side in sides.items():
        results = runs[key]
        bad = sum(r.non2xx + r.errors for r in results)
        if key == "hello":
            ratio = "1.00 (baseline)"
        else:
            value = statistics.median(p.rps / b.rps if b.rps else 0.0
                                      for p, b in zip(results, runs["hello"], strict=True))
            ratio = f"{value:.2f} of waitress hello (target ≥ {targets.get(key, 0):.2f})"
        cpu = [r.server_cpu_us for r in results if r.server_cpu_us]
        rows.append([side.label, f"{statistics.median(r.rps for r in results):,.0f} req/s",
                     f"{statistics.median(r.p50_ms for r in results):.2f}",
                     f"{statistics.median(r.p99_ms for r in results):.2f}",
                     f"{statistics.median(cpu):,.0f}" if cpu else "—", str(bad), ratio])
    return rows


def transfer_rows(stub: ServerProcess, gateway: ServerProcess, tmpdir: Path, seed: suite.Seed,
                  mode: suite.Mode, work: Path) -> list[list[str]]:
    engine_headers = {"X-Flowork-Engine-ID": seed.engine_ids[0]}
    size = mode.transfer_bytes
    label = f"{size / GIB:g} GiB" if size >= GIB else f"{size // MIB} MiB"
    rows = []
    for direction in ("download", "upload"):
        path = f"{API}/bench/download?bytes={size}" if direction == "download" else f"{API}/bench/upload"
        ratios: list[float] = []
        speeds: list[float] = []
        direct_speeds: list[float] = []
        growth: list[float] = []
        temp_files = 0
        bad = 0
        for round_no in range(mode.transfer_rounds):
            results: dict[str, loadgen.TransferResult] = {}
            for which in (("direct", "proxy") if round_no % 2 == 0 else ("proxy", "direct")):
                headers = {**seed.signer.headers(), **engine_headers}
                if which == "direct":
                    results[which] = suite.run_transfer(stub, path, headers, direction, size, work)
                    continue
                with suite.RssSampler(gateway.proc.pid) as rss, \
                        TempFileSampler(gateway.proc.pid, tmpdir) as files:
                    results[which] = suite.run_transfer(gateway, path, headers, direction, size,
                                                        work)
                if rss.growth_mib is not None:
                    growth.append(rss.growth_mib)
                temp_files = max(temp_files, files.peak)
            bad += sum(1 for r in results.values() if not 200 <= r.status < 300 or r.bytes != size)
            direct = results["direct"].mib_per_s
            speeds.append(results["proxy"].mib_per_s)
            direct_speeds.append(direct)
            ratios.append(results["proxy"].mib_per_s / direct if direct else 0.0)
        rows.append([f"{direction} {label} through the proxy (default server)",
                     f"{statistics.median(speeds):,.0f} MiB/s", "", "", "", str(bad),
                     f"{statistics.median(ratios):.2f} of direct "
                     f"({statistics.median(direct_speeds):,.0f} MiB/s; target ≥ 0.70)"])
        rows.append([f"{direction} {label}: gateway peak RSS growth",
                     f"{max(growth):.1f} MiB" if growth else "n/a (no /proc)", "", "", "", "",
                     "target < 64 MiB"])
        rows.append([f"{direction} {label}: temporary files open in the gateway (peak)",
                     str(temp_files), "", "", "", "", "target 0"])
    return rows


def render(rows: list[list[str]]) -> str:
    lines = ["| measurement | result | p50 ms | p99 ms | µs CPU/req | failed | ratio |",
             "|---|---:|---:|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short rounds, 32 MiB transfers")
    parser.add_argument("--bytes", type=int, default=None, help="transfer size (default 1 GiB)")
    parser.add_argument("--rounds", type=int, default=None, help="request rounds")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="gateway worker threads (default: serve's own default per server)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)

    base = suite.SMOKE if args.smoke else suite.FULL
    size = args.bytes or (32 * MIB if args.smoke else GIB)
    mode = suite.Mode(
        name=base.name, duration=args.duration or base.duration, warmup=base.warmup,
        rounds=args.rounds or (1 if args.smoke else 3), transfer_bytes=size,
        transfer_rounds=1 if args.smoke else 2, many_engines=0, threads=suite.FULL.threads,
        connections=args.connections,
    )
    work = Path(tempfile.mkdtemp(prefix="flowork-bench-proxy-"))
    print(f"bench_proxy: work directory {work}", file=sys.stderr, flush=True)
    servers: list[ServerProcess] = []
    try:
        ceiling_argv = [sys.executable, str(BENCH_DIR / "ceiling.py"), "--threads",
                        str(mode.threads), "--max-body", str(size + MIB)]
        plain = clean_environment({}, secret=None)
        ceiling = ServerProcess(ceiling_argv, plain, work, name="ceiling")
        stub = ServerProcess(ceiling_argv, plain, work, name="stub-engine")
        servers += [ceiling, stub]
        gateways: dict[str, ServerProcess] = {}
        tmpdirs: dict[str, Path] = {}
        for name, extra in (("default server", []), ("waitress", ["--server", "waitress"])):
            tmpdirs[name] = work / f"tmp-{name.replace(' ', '-')}"
            tmpdirs[name].mkdir()
            env = clean_environment({
                "DATABASE_URL": f"sqlite:///{(work / 'gateway.db').as_posix()}",
                "FLOWORK_PROXY_MAX_UPLOAD_BYTES": str(size + MIB),
                "FLOWORK_PROXY_READ_TIMEOUT_S": "120",
                "FLOWORK_ENGINE_ONLINE_S": "86400",
                "TMPDIR": str(tmpdirs[name]),
            }, secret=None)
            # Each server with serve's own default worker threads unless --threads is given.
            gateways[name] = ServerProcess([*gateway_argv(args.threads), *extra], env, work,
                                           name=f"gateway-{name.replace(' ', '-')}")
            servers.append(gateways[name])
            gateways[name].wait_up()  # one after the other: both migrate the same database
        for server in servers:
            server.wait_up()
        default = gateways["default server"]
        seed = suite.seed_gateway(default.base, own_engines=1, other_users=0)
        suite.heartbeat(default.base, seed.tokens[0], stub.base)
        rows = request_rows(ceiling, gateways, seed, mode, work)
        suite.heartbeat(default.base, seed.tokens[0], stub.base)
        rows += transfer_rows(stub, default, tmpdirs["default server"], seed, mode, work)
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    tool = "wrk" if loadgen.wrk_path() else "bench/loadgen.py"
    print(f"Proxy benchmark ({mode.name}): gateway worker threads "
          f"{args.threads or 'as serve defaults'}, baseline and stub {mode.threads} waitress threads, "
          f"{mode.connections} connections from {tool}, {mode.duration:g} s per measurement, "
          f"{mode.rounds} round(s); transfers of {size / MIB:,.0f} MiB, "
          f"{mode.transfer_rounds} round(s).\n")
    print(render(rows))
    return 1 if any(row[5] not in ("", "0") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
