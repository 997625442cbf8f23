"""Which async HTTP client should the proxy use upstream? CPU per request, measured.

One client process (this one, a single event loop) against a stub engine in a second process
(tests/support/async_upstreams.py: asyncio + llhttp, answering a 11-byte JSON body), so that
the CPU time of this process is the client's alone (pyreqwest's tokio threads included, they
are this process's). Rows:

- ``small GET``: ``--requests`` GETs, ``--concurrency`` in flight, body read: CPU µs a request
- ``64 MiB down``: one streamed download, chunks iterated and dropped: CPU ms
- ``64 MiB up``: one upload from an async generator of 64 KiB chunks (no Content-Length, so
  chunked where the client supports it): CPU ms

Each figure is the median of ``--rounds`` rounds; the ratio is against the cheapest candidate
in the same run (1.00 = cheapest; 2.00 = twice its CPU). Candidates that are not installed
are skipped: ``pip install aiohttp pyreqwest`` to compare all of them.

    .venv/bin/python bench/bench_upstream.py            # full (about a minute)
    .venv/bin/python bench/bench_upstream.py --smoke    # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
CHUNK = 64 * 1024


class Candidate:
    """One client: ``get`` reads a whole body, ``down`` iterates one, ``up`` streams one."""

    name = ""

    async def open(self, concurrency: int) -> None: ...
    async def close(self) -> None: ...
    async def get(self, url: str) -> int: ...
    async def down(self, url: str) -> int: ...
    async def up(self, url: str, body: AsyncIterator[bytes]) -> int: ...


class Ours(Candidate):
    name = "ours (asyncio + httptools)"

    async def open(self, concurrency: int) -> None:
        from gateway_plugins.proxy.upstream import Timeouts, UpstreamClient

        self.client = UpstreamClient(max_connections=concurrency, address_policy=None)
        self.timeouts = Timeouts(5, 30, 30, 120)

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, url: str) -> int:
        response = await self.client.request("GET", url, [], None, timeouts=self.timeouts,
                                             guard=True)
        size = 0
        async for chunk in response:
            size += len(chunk)
        return size

    down = get

    async def up(self, url: str, body: AsyncIterator[bytes]) -> int:
        response = await self.client.request("POST", url, [], body, timeouts=self.timeouts,
                                             guard=True)
        async for _ in response:
            pass
        return response.status


class Aiohttp(Candidate):
    name = "aiohttp"

    async def open(self, concurrency: int) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency), auto_decompress=False,
            trust_env=False, timeout=aiohttp.ClientTimeout(total=120, connect=5, sock_read=30))

    async def close(self) -> None:
        await self.session.close()

    async def get(self, url: str) -> int:
        async with self.session.get(url, allow_redirects=False) as response:
            return len(await response.read())

    async def down(self, url: str) -> int:
        size = 0
        async with self.session.get(url, allow_redirects=False) as response:
            async for chunk in response.content.iter_any():
                size += len(chunk)
        return size

    async def up(self, url: str, body: AsyncIterator[bytes]) -> int:
        async with self.session.post(url, data=body, allow_redirects=False) as response:
            await response.read()
            return response.status


class Httpx(Candidate):
    name = "httpx.AsyncClient"

    async def open(self, concurrency: int) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency,
                                max_keepalive_connections=concurrency),
            trust_env=False, follow_redirects=False, timeout=httpx.Timeout(30, connect=5))

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, url: str) -> int:
        response = await self.client.get(url)
        return len(response.content)

    async def down(self, url: str) -> int:
        size = 0
        async with self.client.stream("GET", url) as response:
            async for chunk in response.aiter_raw():
                size += len(chunk)
        return size

    async def up(self, url: str, body: AsyncIterator[bytes]) -> int:
        response = await self.client.post(url, content=body)
        return response.status_code


class Httpcore(Candidate):
    name = "httpcore.AsyncConnectionPool"

    async def open(self, concurrency: int) -> None:
        import httpcore

        self.pool = httpcore.AsyncConnectionPool(max_connections=concurrency,
                                                 max_keepalive_connections=concurrency)

    async def close(self) -> None:
        await self.pool.aclose()

    async def get(self, url: str) -> int:
        response = await self.pool.request("GET", url)
        return len(response.content)

    async def down(self, url: str) -> int:
        size = 0
        async with self.pool.stream("GET", url) as response:
            async for chunk in response.aiter_stream():
                size += len(chunk)
        return size

    async def up(self, url: str, body: AsyncIterator[bytes]) -> int:
        response = await self.pool.request("POST", url, content=body,
                                           headers=[(b"Transfer-Encoding", b"chunked")])
        return response.status


class Pyreqwest(Candidate):
    name = "pyreqwest"

    async def open(self, concurrency: int) -> None:
        from pyreqwest.client import ClientBuilder

        self.client = (ClientBuilder().max_connections(concurrency).follow_redirects(False)
                       .no_proxy().gzip(False).build())

    async def close(self) -> None:
        await self.client.close()

    async def get(self, url: str) -> int:
        response = await self.client.get(url).build().send()
        return len(await response.bytes())

    async def down(self, url: str) -> int:
        size = 0
        async with self.client.get(url).build_streamed() as response:
            reader = response.body_reader
            while (chunk := await reader.read_chunk()) is not None:
                size += len(chunk)
        return size

    async def up(self, url: str, body: AsyncIterator[bytes]) -> int:
        response = await self.client.post(url).body_stream(body).build().send()
        await response.bytes()
        return response.status


CANDIDATES: list[type[Candidate]] = [Ours, Aiohttp, Httpx, Httpcore, Pyreqwest]


def available() -> list[Candidate]:
    found = []
    modules = {Aiohttp: "aiohttp", Pyreqwest: "pyreqwest", Httpx: "httpx", Httpcore: "httpcore",
               Ours: "httptools"}
    for kind in CANDIDATES:
        try:
            __import__(modules[kind])
        except ImportError:
            print(f"skipped: {kind.name} (not installed)")
            continue
        found.append(kind())
    return found


async def cpu_of(work: Callable[[], Awaitable[object]]) -> float:
    start = time.process_time()
    await work()
    return time.process_time() - start


async def chunks(total: int) -> AsyncIterator[bytes]:
    block = bytes(CHUNK)
    for _ in range(total // CHUNK):
        yield block


async def measure(candidate: Candidate, base: str, requests: int, concurrency: int,
                  transfer: int) -> tuple[float, float, float]:
    """(CPU µs per small GET, CPU ms per download, CPU ms per upload) for one round."""
    await candidate.open(concurrency)
    try:
        small = f"{base}/api/v1/small"
        assert await candidate.get(small) == 11  # warm: connections made, code paths loaded

        async def worker(count: int) -> None:
            for _ in range(count):
                await candidate.get(small)

        per_worker = requests // concurrency

        async def burst() -> None:
            await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))

        small_cpu = await cpu_of(burst) / (per_worker * concurrency) * 1e6
        down_url = f"{base}/api/v1/zeros?size={transfer}"
        sizes: list[int] = []

        async def download() -> None:
            sizes.append(await candidate.down(down_url))

        down_cpu = await cpu_of(download) * 1e3
        assert sizes == [transfer], (candidate.name, sizes)
        statuses: list[int] = []

        async def upload() -> None:
            statuses.append(await candidate.up(f"{base}/api/v1/echo", chunks(transfer)))

        up_cpu = await cpu_of(upload) * 1e3
        assert statuses == [200], (candidate.name, statuses)
        return small_cpu, down_cpu, up_cpu
    finally:
        await candidate.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small counts (CI)")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    requests, rounds, transfer = args.requests, args.rounds, 64 * MIB
    if args.smoke:
        requests, rounds, transfer = 320, 1, 8 * MIB
    stub = subprocess.Popen([sys.executable, "-m", "tests.support.async_upstreams"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert stub.stdout is not None
        base = f"http://127.0.0.1:{int(stub.stdout.readline())}"
        candidates = available()
        results: dict[str, list[tuple[float, float, float]]] = {c.name: [] for c in candidates}
        for _ in range(rounds):  # interleaved, so drift hits every candidate alike
            for candidate in candidates:
                results[candidate.name].append(asyncio.run(asyncio.wait_for(
                    measure(candidate, base, requests, args.concurrency, transfer), 300)))
    finally:
        stub.terminate()
        stub.wait(10)
    medians = {name: tuple(statistics.median(r[i] for r in rows) for i in range(3))
               for name, rows in results.items()}
    best = [min(m[i] for m in medians.values()) for i in range(3)]
    mib = transfer // MIB
    print(f"\nUpstream client CPU ({requests} GETs x {args.concurrency} in flight; "
          f"{mib} MiB each way; median of {rounds}; ratio = CPU / cheapest)\n")
    print(f"| client | small GET µs | ratio | {mib} MiB down ms | ratio | {mib} MiB up ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, m in sorted(medians.items(), key=lambda item: item[1][0]):
        cells = " | ".join(f"{m[i]:.0f} | {m[i] / best[i]:.2f}" for i in range(3))
        print(f"| {name} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
