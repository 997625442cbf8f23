"""Profile one row's subject with py-spy while wrk loads it (how docs/performance-notes.md's
profiles are taken).

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_row.py warm            # signed warm GET /user/engines, SQLite
    .venv/bin/python bench/profile_row.py proxy --server waitress --seconds 15
    .venv/bin/python bench/profile_row.py postgres
    .venv/bin/python bench/profile_row.py warm --gil      # only samples holding the GIL

Starts the stub engine and one gateway (``flowork-gateway serve``, uvicorn unless
``--server waitress``), seeds it as bench/run.py does, runs wrk (8 connections) for
``--seconds`` while ``py-spy record -f raw`` samples the gateway (all threads; idle samples
dropped), then prints the load's figures (req/s, server CPU µs per request) and a summary of
the samples: the share of samples whose stack contains each of the buckets below, and the
hottest leaf frames. ``--keep`` keeps the raw profile (``flamegraph.pl`` reads it).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

import loadgen  # noqa: E402
import run  # noqa: E402

from tests.support.procs import ServerProcess, clean_environment, gateway_argv  # noqa: E402

#: (label, substrings any of which in a frame puts a sample in the bucket)
BUCKETS = (
    ("uvicorn / uvloop protocol and loop", ("uvicorn/", "uvloop")),
    ("waitress (parsing, channels, task queue)", ("waitress/",)),
    ("Falcon (request/response, routing)", ("falcon/",)),
    ("kernel (gateway_kernel)", ("gateway_kernel/",)),
    ("kernel worker pool hand-off", ("gateway_kernel/workers.py",)),
    ("auth_crypto (signature checks, caches)", ("auth_crypto/",)),
    ("engines plugin", ("engines/",)),
    ("proxy plugin", ("proxy/",)),
    ("proxy upstream client", ("proxy/upstream.py",)),
    ("proxy sync path: httpx / httpcore / h11", ("httpx/", "httpcore/", "h11/")),
    ("peewee (query building, cursor)", ("peewee.py",)),
    ("sqlite3 execute / fetch", ("execute (sqlite3", "fetchall (sqlite3", "fetchone (sqlite3",
                                 "(sqlite3/", "_sqlite3")),
    ("psycopg2", ("psycopg2",)),
    ("socket send/recv", ("send (", "sendall (", "recv (", "recv_into (")),
    ("threading / queue waits", ("threading.py", "queue.py")),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
)


def seeded_gateway(kind: str, server: str, workdir: Path, stub: ServerProcess,
                   database_url: str) -> tuple[ServerProcess, str, list[dict[str, str]]]:
    env = clean_environment({"DATABASE_URL": database_url, "FLOWORK_PLUGINS": "bundled"},
                            secret="profile-" + "x" * 24)
    argv = gateway_argv(threads=8 if server == "waitress" else None,
                        server=server if server != "uvicorn" else None)
    gw = ServerProcess(argv, env, workdir, name=f"gateway-{server}")
    gw.wait_up()
    seed = run.seed_gateway(gw.base)
    if kind in ("warm", "postgres"):
        path = run.API + "/user/engines"
        headers = [seed.signer.headers()]
    elif kind in ("proxy", "download"):
        run.heartbeat(gw.base, seed.tokens[0], stub.base)
        path = run.API + ("/bench/echo" if kind == "proxy" else "/bench/download")
        headers = [{**seed.signer.headers(), "X-Flowork-Engine-ID": seed.engine_ids[0]}]
    elif kind == "health":
        path, headers = run.API + "/system/health", [{}]
    else:
        raise SystemExit(f"unknown row {kind!r}")
    return gw, path, headers


def summarise(raw: Path, top: int) -> str:
    total = 0
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for label, needles in BUCKETS:
            if any(n in f for f in frames for n in needles):
                buckets[label] += count
        leaves[frames[-1]] += count
    out = [f"{total} samples (non-idle, all threads)", "", "| bucket (stack contains) | % |",
           "|---|---:|"]
    for label, _ in BUCKETS:
        if buckets[label]:
            out.append(f"| {label} | {100 * buckets[label] / total:.1f} |")
    out += ["", "| leaf frame (self) | % |", "|---|---:|"]
    for frame, count in leaves.most_common(top):
        out.append(f"| `{frame[:110]}` | {100 * count / total:.1f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("row", choices=("warm", "postgres", "proxy", "health", "download"))
    parser.add_argument("--server", choices=("uvicorn", "waitress"), default="uvicorn")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--gil", action="store_true", help="py-spy --gil")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--postgres-url", default=run.DEFAULT_POSTGRES)
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="flowork-profile-"))
    servers: list[ServerProcess] = []
    try:
        stub = ServerProcess([sys.executable, str(BENCH_DIR / "ceiling.py"), "--threads", "8"],
                             clean_environment({}, secret=None), workdir, name="stub")
        servers.append(stub)
        stub.wait_up()
        pg = run.postgres_database(args.postgres_url) if args.row == "postgres" else None
        database_url = (pg.__enter__() if pg else
                        f"sqlite:///{(workdir / 'profile.db').as_posix()}")
        try:
            gw, path, headers = seeded_gateway(args.row, args.server, workdir, stub,
                                               database_url)
            servers.append(gw)
            if args.row != "download":
                loadgen.run_wrk(gw.base + path, headers, 8, 2, 0, gw.proc.pid)  # warm-up
            raw = workdir / "profile.raw"
            cmd = [spy, "record", "-f", "raw", "-r", str(args.rate), "-d", str(int(args.seconds)),
                   "-p", str(gw.proc.pid), "-o", str(raw), "--nonblocking"]
            if args.gil:
                cmd.append("--gil")
            result: list[loadgen.LoadResult] = []
            if args.row == "download":  # one streamed 1 GiB download at a time, repeated
                def transfers() -> None:
                    deadline = time.monotonic() + args.seconds
                    while time.monotonic() < deadline:
                        t = run.run_transfer(gw, f"{path}?bytes={run.GIB}", headers[0],
                                             "download", run.GIB, workdir)
                        print(f"1 GiB download through the proxy: {t.mib_per_s:,.0f} MiB/s")

                load = threading.Thread(target=transfers)
            else:
                load = threading.Thread(target=lambda: result.append(loadgen.run_wrk(
                    gw.base + path, headers, 8, args.seconds, 0, gw.proc.pid)))
            load.start()
            time.sleep(0.2)
            subprocess.run(cmd, check=True, capture_output=True)
            load.join()
            for r in result:
                    print(f"{args.row} under {args.server}: {r.rps:,.0f} req/s, server CPU "
                      f"{r.server_cpu_us or 0:,.0f} µs/req, p50 {r.p50_ms:.2f} ms, non-2xx "
                      f"{r.non2xx} (py-spy sampling at {args.rate} Hz slows the server a little)")
            print()
            print(summarise(raw, args.top))
            if args.keep:
                kept = Path.cwd() / f"profile-{args.row}-{args.server}.raw"
                shutil.copy(raw, kept)
                print(f"\nraw profile: {kept}")
        finally:
            if pg:
                for server in servers[1:]:
                    server.stop()
                pg.__exit__(None, None, None)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
