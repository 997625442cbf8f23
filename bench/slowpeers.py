"""Slow and idle peers for the benchmark suite, each run in its own process (asyncio).

- ``python bench/slowpeers.py siege SPEC.json``: keeps ``hanging`` signed proxied requests
  open against an engine that never answers (``hang_port``: this process also runs that
  engine, the tests' ``AsyncEngine``, whose ``/api/v1/hang`` reads the request and never
  answers) and ``slow_headers`` connections dribbling a request head one byte a second
  (reopened when the server closes them), for ``seconds``.
  Prints ``ready`` once everything is open, then one JSON object at the end.
- ``python bench/slowpeers.py websockets SPEC.json``: opens ``count`` WebSocket connections
  to ``url``, checks one echo on each, prints ``ready {...}``, holds them idle until stdin
  closes (or ``seconds``), then closes them.

Every loop is bounded in count and time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

from tests.support.async_upstreams import AsyncEngine

HOLD_MAX_S = 600.0


async def _hanging_request(host: str, port: int, request: bytes, stop: asyncio.Event,
                           stats: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.2)
            continue
        writer.write(request)
        stats["hanging_sent"] += 1
        try:
            done = asyncio.ensure_future(reader.read(65536))
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait({done, waiter}, return_when=asyncio.FIRST_COMPLETED)
            answered = done.done() and not waiter.done()
            if answered:
                # the gateway gave up on it (a timeout) or refused it (503 engine_busy: the
                # per-engine bound); wait as Retry-After asks instead of reconnecting at once,
                # or the row measures a flood of new requests, not hanging ones
                stats["hanging_answered"] += 1
            for task in (done, waiter):
                task.cancel()
        finally:
            writer.close()
        if answered:
            await asyncio.sleep(1.0)


async def _slow_header(host: str, port: int, stop: asyncio.Event, stats: dict[str, int]) -> None:
    head = b"GET /api/v1/system/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.2)
            continue
        stats["slow_opened"] += 1
        try:
            for byte in head:
                if stop.is_set() or reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except TimeoutError:
                    pass
        except ConnectionError:
            pass
        finally:
            stats["slow_closed"] += 1
            writer.close()


async def siege(spec: dict[str, Any]) -> dict[str, Any]:
    with AsyncEngine() as engine:  # in a thread of its own: its own event loop
        return await _siege(spec, engine.port)


async def _siege(spec: dict[str, Any], hang_port: int) -> dict[str, Any]:
    host, port = "127.0.0.1", spec["port"]
    stop = asyncio.Event()
    print(json.dumps({"hang_port": hang_port}), flush=True)
    # The caller points an engine at hang_port, then writes a line with the request headers.
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    headers: dict[str, str] = json.loads(line)
    request = (f"GET {spec['path']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    stats = {"hanging_sent": 0, "hanging_answered": 0, "slow_opened": 0, "slow_closed": 0,
             "connect_errors": 0}
    tasks = [asyncio.ensure_future(_hanging_request(host, port, request, stop, stats))
             for _ in range(spec["hanging"])]
    tasks += [asyncio.ensure_future(_slow_header(host, port, stop, stats))
              for _ in range(spec["slow_headers"])]
    await asyncio.sleep(1.0)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), min(spec["seconds"], HOLD_MAX_S))
    except TimeoutError:
        pass
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    return stats


async def websockets_idle(spec: dict[str, Any]) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    connections = []
    failed = 0
    for _ in range(spec["count"]):
        try:
            ws = await connect(spec["url"], open_timeout=10, ping_interval=None,
                               max_queue=1, compression=None)
            await ws.send("x")
            if await asyncio.wait_for(ws.recv(), 10) != "x":
                failed += 1
            connections.append(ws)
        except Exception:  # any failure (refused, timed out, closed) counts
            failed += 1
    print("ready " + json.dumps({"open": len(connections), "failed": failed}), flush=True)
    loop = asyncio.get_running_loop()
    reader = loop.run_in_executor(None, sys.stdin.readline)  # returns when stdin closes
    await asyncio.wait({reader}, timeout=min(spec.get("seconds", 60), HOLD_MAX_S))
    for ws in connections:
        await ws.close()
    return {"open": len(connections), "failed": failed}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command, spec_path = args
    with open(spec_path) as handle:
        spec = json.load(handle)
    started = time.monotonic()
    if command == "siege":
        result = asyncio.run(siege(spec))
    elif command == "websockets":
        result = asyncio.run(websockets_idle(spec))
    else:
        raise SystemExit(f"unknown command {command}")
    result["seconds"] = time.monotonic() - started
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
