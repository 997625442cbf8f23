"""Realtime relay: GUI → engine → GUI round trip, relayed messages per second, memory per
idle socket, through a real gateway process on loopback.

    .venv/bin/python bench/bench_realtime.py [--smoke]

The baseline, measured in the same run on the same machine, is a bare python-socketio server
under uvicorn that relays the same events between the same two namespaces with no gateway
logic (no auth, routing or role checks): ratios show what the gateway adds. Targets (issue
13): p50 round trip < 5 ms, ≥ 2,000 relayed messages/s per instance, < 64 KiB per idle socket.
The client runs in this process on the same two shared cores, so throughput is a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import socketio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support: the helpers shared with the tests

from gateway_plugins.auth_crypto.signing import Signer  # noqa: E402
from tests.support.procs import ServerProcess, clean_environment, free_port  # noqa: E402
from tests.support.realtime_clients import (  # noqa: E402
    EnginePeer,
    GuiPeer,
    socket_headers,
    start_gateway,
)

ENGINE_NS, GUI_NS = "/engine-socket", "/gui-socket"


# -- the baseline: a bare relay --------------------------------------------------------------


def serve_baseline(port: int) -> None:
    import uvicorn

    sio = socketio.AsyncServer(async_mode="asgi", async_handlers=False)

    @sio.on("connect", namespace=ENGINE_NS)
    async def engine_connect(sid, environ, auth=None):
        await sio.enter_room(sid, "engine", namespace=ENGINE_NS)
        await sio.emit("auth_success", {}, to=sid, namespace=ENGINE_NS)

    @sio.on("connect", namespace=GUI_NS)
    async def gui_connect(sid, environ, auth=None):
        await sio.enter_room(sid, "gui", namespace=GUI_NS)
        await sio.emit("initial_engine_statuses", [], to=sid, namespace=GUI_NS)

    @sio.on("request_presets_list", namespace=GUI_NS)
    async def command(sid, data):
        await sio.emit("request_presets_list", {"v": 2, "payload": data}, to="engine",
                       namespace=ENGINE_NS)

    @sio.on("response_presets_list", namespace=ENGINE_NS)
    async def reply(sid, data):
        await sio.emit("response_presets_list", data, to="gui", namespace=GUI_NS)

    uvicorn.run(socketio.ASGIApp(sio, socketio_path="socket.io"), host="127.0.0.1", port=port,
                log_level="warning")


def start_baseline(log_dir: Path) -> ServerProcess:
    port = free_port()
    server = ServerProcess([sys.executable, str(Path(__file__).resolve()), "--baseline-server",
                            str(port)], clean_environment({}), log_dir, name="baseline",
                           port=port, health="/socket.io/?EIO=4&transport=polling",
                           listen_args=False)
    try:
        server.wait_up(30)
    except BaseException:
        server.stop()
        raise
    return server


# -- measurements ----------------------------------------------------------------------------


async def connect_pair(base: str, token: str | None, signer: Signer | None,
                       path: str) -> tuple[EnginePeer, GuiPeer]:
    if token is None:  # baseline
        engine = EnginePeer()
        await engine.open(base, path=path, auth={})
        await engine.next("auth_success")
        gui = GuiPeer()
        await gui.open(base, path=path, auth={})
        await gui.next("initial_engine_statuses")
        return engine, gui
    engine = await EnginePeer.connect(base, token, path=path)
    assert signer is not None
    gui = await GuiPeer.connect(base, signer, path=path)
    return engine, gui


def echo_engine(engine: EnginePeer) -> None:
    async def on_command(data):
        payload = data.get("payload", data) if isinstance(data, dict) else {}
        await engine.client.emit("response_presets_list",
                                 {"n": payload.get("n"), "_target_user_id": payload.get(
                                     "_target_user_id")}, namespace=ENGINE_NS)

    engine.client.on("request_presets_list", on_command, namespace=ENGINE_NS)


async def round_trips(engine: EnginePeer, gui: GuiPeer, engine_id: str | None,
                      count: int) -> list[float]:
    waiting: dict[int, asyncio.Future] = {}

    async def on_reply(data):
        future = waiting.pop(data.get("n"), None)
        if future is not None and not future.done():
            future.set_result(None)

    gui.client.handlers[GUI_NS]["response_presets_list"] = on_reply
    loop = asyncio.get_running_loop()
    times = []
    for n in range(count):
        future = loop.create_future()
        waiting[n] = future
        started = time.perf_counter()
        await gui.client.emit("request_presets_list", {"n": n, "target_engine_id": engine_id},
                              namespace=GUI_NS)
        await asyncio.wait_for(future, 10)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def throughput(engine: EnginePeer, gui: GuiPeer, engine_id: str | None, count: int,
                     window: int = 200) -> float:
    """Relayed messages (commands and replies) per second, ``window`` commands in flight."""
    done = asyncio.Event()
    received = 0
    slots = asyncio.Semaphore(window)

    async def on_reply(data):
        nonlocal received
        received += 1
        slots.release()
        if received >= count:
            done.set()

    gui.client.handlers[GUI_NS]["response_presets_list"] = on_reply
    started = time.perf_counter()
    for n in range(count):
        await slots.acquire()
        await gui.client.emit("request_presets_list", {"n": n, "target_engine_id": engine_id},
                              namespace=GUI_NS)
    await asyncio.wait_for(done.wait(), 120)
    return 2 * count / (time.perf_counter() - started)


async def idle_memory(server: ServerProcess, base: str, signer: Signer | None, sockets: int,
                      path: str) -> float:
    """KiB of server RSS per idle GUI socket."""
    await asyncio.sleep(1)
    before = server.rss_kib() or 0
    peers = []
    for start in range(0, sockets, 50):
        batch = []
        for _ in range(min(50, sockets - start)):
            peer = GuiPeer()
            auth = {"headers": socket_headers(signer)} if signer is not None else {}
            batch.append(peer.open(base, path=path, auth=auth))
            peers.append(peer)
        await asyncio.gather(*batch)
    await asyncio.sleep(2)
    after = server.rss_kib() or 0
    await asyncio.gather(*(p.close() for p in peers))
    return (after - before) / sockets


async def measure(servers: dict[str, tuple], args: argparse.Namespace) -> dict[str, dict]:
    """Alternating rounds on both servers (the machine is shared: load drifts between rounds);
    the median over rounds of each round's figure."""
    path = "/socket.io/"
    pairs = {}
    for name, (_server, base, token, engine_id, signer) in servers.items():
        engine, gui = await connect_pair(base, token, signer, path)
        echo_engine(engine)
        pairs[name] = (engine, gui, engine_id)
    p50s: dict[str, list[float]] = {name: [] for name in servers}
    p99s: dict[str, list[float]] = {name: [] for name in servers}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    for _round in range(args.rounds):
        for name, (engine, gui, engine_id) in pairs.items():
            times = sorted(await round_trips(engine, gui, engine_id, args.round_trips))
            p50s[name].append(statistics.median(times))
            p99s[name].append(times[max(0, int(len(times) * 0.99) - 1)])
            rates[name].append(await throughput(engine, gui, engine_id, args.messages))
    results = {}
    for name, (server, base, _token, _engine_id, signer) in servers.items():
        engine, gui, _ = pairs[name]
        await engine.close()
        await gui.close()
        results[name] = {"p50": statistics.median(p50s[name]), "p99": statistics.median(p99s[name]),
                         "rate": statistics.median(rates[name]),
                         "kib": await idle_memory(server, base, signer, args.sockets, path)}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        serve_baseline(args.baseline_server)
        return 0
    args.rounds = 3 if args.smoke else 7
    args.round_trips = 100 if args.smoke else 300
    args.messages = 1000 if args.smoke else 4000
    args.sockets = 100 if args.smoke else 1000
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        baseline = start_baseline(logs)
        gateway = start_gateway({"DATABASE_URL": f"sqlite:///{tmp}/bench.db",
                                 "FLOWORK_REALTIME_EVENT_RATE": "1000000"}, logs)
        try:
            owner = Signer.new()
            r = httpx.post(gateway.url("/user/engines"), json={"name": "bench"},
                           headers=owner.headers())
            engine = r.json()
            results = asyncio.run(measure({
                "bare": (baseline, baseline.base, None, None, None),
                "gateway": (gateway, gateway.base, engine["raw_token"], engine["id"], owner),
            }, args))
        finally:
            baseline.stop()
            gateway.stop()
    ours, bare = results["gateway"], results["bare"]
    rows = [
        ("round trip p50 (ms)", "p50", "< 5", ours["p50"] < 5),
        ("round trip p99 (ms)", "p99", "", None),
        ("relayed messages/s", "rate", ">= 2000", ours["rate"] >= 2000),
        (f"KiB per idle socket ({args.sockets})", "kib", "< 64", ours["kib"] < 64),
    ]
    print(f"{'measure':34} {'gateway':>10} {'bare relay':>11} {'ratio':>7}  target")
    for label, key, target, ok in rows:
        ratio = ours[key] / bare[key] if bare[key] else float("nan")
        verdict = "" if ok is None else ("pass" if ok else "MISS")
        print(f"{label:34} {ours[key]:10.2f} {bare[key]:11.2f} {ratio:7.2f}  {target} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
