"""Load generators for the benchmark suite, each run in its own process (never the server's).

- ``wrk`` (Debian's package) when it is installed: :func:`run_wrk`.
- else a Python keep-alive generator: ``python bench/loadgen.py http SPEC.json`` (threads,
  one persistent connection each, pre-encoded requests).
- big transfers: ``python bench/loadgen.py transfer SPEC.json`` (one request, streamed).

Each prints one JSON object on stdout. A request spec may carry several header sets: request
*i* uses set *i mod n*, so a row can send a fresh signature with every request.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RECV = 65536


@dataclass
class LoadResult:
    """One measured load run."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int
    header_sets_reused: bool = False
    tool: str = "python"
    server_cpu_us: float | None = None  # server process CPU time per measured request


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@dataclass
class TransferResult:
    status: int
    bytes: int
    seconds: float

    @property
    def mib_per_s(self) -> float:
        return self.bytes / (1 << 20) / self.seconds if self.seconds > 0 else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


# -- the Python keep-alive generator -----------------------------------------------------------


def encode_request(method: str, host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection:
    """One keep-alive HTTP/1.1 connection that reads whole responses (length or chunked)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(RECV)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def exchange(self, request: bytes) -> int:
        """Send ``request``, read its whole response, return the status."""
        sock = self.sock or self._connect()
        sock.sendall(request)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill(sock)
        head = self.buf[:end].decode("latin-1").split("\r\n")
        self.buf = self.buf[end + 4:]
        status = int(head[0].split(" ", 2)[1])
        length = None
        chunked = close = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        if chunked:
            self._read_chunked(sock)
        elif length is not None:
            while len(self.buf) < length:
                self._fill(sock)
            self.buf = self.buf[length:]
        elif status not in (204, 304) and not 100 <= status < 200:
            close = True  # body until close: read it all
            try:
                while True:
                    self._fill(sock)
            except ConnectionError:
                pass
        if close:
            self.close()
        return status

    def _read_chunked(self, sock: socket.socket) -> None:
        while True:
            while b"\r\n" not in self.buf:
                self._fill(sock)
            line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                while b"\r\n" not in self.buf:  # trailers end with an empty line
                    self._fill(sock)
                while not self.buf.startswith(b"\r\n"):
                    _, self.buf = self.buf.split(b"\r\n", 1)
                    while b"\r\n" not in self.buf:
                        self._fill(sock)
                self.buf = self.buf[2:]
                return
            while len(self.buf) < size + 2:
                self._fill(sock)
            self.buf = self.buf[size + 2:]


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def python_load(host: str, port: int, path: str, header_sets: Sequence[dict[str, str]],
                connections: int, duration: float, warmup: float) -> LoadResult:
    """Closed-loop load: ``connections`` threads, each one connection, for ``duration`` s
    after ``warmup`` s (warm-up responses are not counted)."""
    requests = [encode_request("GET", host, port, path, h) for h in header_sets or [{}]]
    counter = itertools.count()
    start = time.perf_counter()
    measure_from = start + warmup
    deadline = measure_from + duration
    results: list[tuple[list[float], int, int, int]] = []
    lock = threading.Lock()

    def worker() -> None:
        conn = _Connection(host, port)
        latencies: list[float] = []
        non2xx = errors = sent = 0
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline:
                    break
                request = requests[next(counter) % len(requests)]
                sent += 1
                try:
                    status = conn.exchange(request)
                except (OSError, ValueError, IndexError):
                    conn.close()
                    errors += 1
                    time.sleep(0.01)
                    continue
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= deadline:
                    latencies.append(t1 - t0)
                    if not 200 <= status < 300:
                        non2xx += 1
        finally:
            conn.close()
            with lock:
                results.append((latencies, non2xx, errors, sent))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + warmup + 60)
    latencies = sorted(x for r in results for x in r[0])
    total_sent = sum(r[3] for r in results)
    return LoadResult(
        requests=len(latencies),
        seconds=duration,
        rps=len(latencies) / duration,
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        non2xx=sum(r[1] for r in results),
        errors=sum(r[2] for r in results),
        header_sets_reused=total_sent > len(requests) > 1,
        tool="python",
    )


# -- wrk ----------------------------------------------------------------------------------------

_WRK_STATIC = """
wrk.method = "GET"
wrk.headers = {%s}
"""

_WRK_ROTATING = """
local sets = {}
local n = 0
local used = 0
init = function(args)
  used = tonumber(args[1] or "0") or 0
  for line in io.lines("%s") do
    local a, s, m = line:match("^([^\\t]*)\\t([^\\t]*)\\t(.*)$")
    n = n + 1
    sets[n] = {["X-User-Address"] = a, ["X-Signature"] = s, ["X-Signed-Message"] = m,
               ["X-Payload-Version"] = "2"%s}
  end
end
request = function()
  used = used + 1
  return wrk.format("GET", nil, sets[((used - 1) %% n) + 1])
end
"""

_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"errors":%d,'
    .. '"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrk_script(workdir: Path, header_sets: Sequence[dict[str, str]]) -> Path:
    rotating = len(header_sets) > 1
    if rotating:
        data = workdir / "header_sets.tsv"
        common = None
        lines = []
        for h in header_sets:
            lines.append("\t".join((h["X-User-Address"], h["X-Signature"], h["X-Signed-Message"])))
            extra = {k: v for k, v in h.items()
                     if k not in ("X-User-Address", "X-Signature", "X-Signed-Message",
                                  "X-Payload-Version")}
            common = extra if common is None else common
        data.write_text("\n".join(lines) + "\n")
        extra_lua = "".join(f", [{_lua_string(k)}] = {_lua_string(v)}"
                            for k, v in (common or {}).items())
        body = _WRK_ROTATING % (str(data), extra_lua)
    else:
        headers = header_sets[0] if header_sets else {}
        body = _WRK_STATIC % ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}"
                                       for k, v in headers.items())
    script = workdir / ("rotating.lua" if rotating else "static.lua")
    script.write_text(body + _WRK_DONE)
    return script


def run_wrk(url: str, header_sets: Sequence[dict[str, str]], connections: int,
            duration: float, warmup: float, server_pid: int | None = None) -> LoadResult:
    """wrk (one client thread; the server gets the other core) for ``duration`` s, after a
    separate ``warmup`` s run whose figures are dropped. With several header sets the
    measured run starts after the ones the warm-up used, so no set is sent twice."""
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk is not installed")
    with tempfile.TemporaryDirectory(prefix="flowork-wrk-") as tmp:
        script = _wrk_script(Path(tmp), header_sets)

        def once(seconds: float, offset: int) -> dict[str, Any]:
            secs = max(1, round(seconds))
            cmd = [exe, "-t1", f"-c{connections}", f"-d{secs}s", "--timeout", "30s",
                   "-s", str(script), url, "--", str(offset)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 90)
            for line in proc.stdout.splitlines():
                if line.startswith("BENCH_JSON "):
                    return json.loads(line[len("BENCH_JSON "):])
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")

        offset = 0
        if warmup > 0:
            offset = once(warmup, 0)["requests"] + connections
        cpu_before = process_cpu_s(server_pid) if server_pid else None
        data = once(duration, offset)
        cpu_after = process_cpu_s(server_pid) if server_pid else None
    seconds = data["duration_us"] / 1e6
    return LoadResult(
        requests=data["requests"],
        seconds=seconds,
        rps=data["requests"] / seconds if seconds else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non2xx=data["non2xx"],
        errors=data["errors"],
        header_sets_reused=len(header_sets) > 1 and offset + data["requests"] > len(header_sets),
        tool="wrk",
        server_cpu_us=((cpu_after - cpu_before) / data["requests"] * 1e6
                       if cpu_before is not None and cpu_after is not None and data["requests"]
                       else None),
    )


# -- big transfers ------------------------------------------------------------------------------


def _upload_body(size: int, chunk: int) -> Iterator[bytes]:
    block = bytes(chunk)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield block if n == chunk else block[:n]
        left -= n


def transfer(host: str, port: int, path: str, headers: dict[str, str], direction: str,
             size: int, chunk: int = 1 << 20) -> TransferResult:
    """Download (GET) or upload (POST) ``size`` bytes in one streamed request."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        start = time.perf_counter()
        if direction == "download":
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            buffer = bytearray(chunk)
            view = memoryview(buffer)
            received = 0
            while True:
                n = resp.readinto(view)
                if not n:
                    break
                received += n
        elif direction == "upload":
            conn.request("POST", path, body=_upload_body(size, chunk),
                         headers={**headers, "Content-Length": str(size),
                                  "Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            answer = resp.read()
            received = size
            if resp.status == 200:
                received = int(json.loads(answer).get("received", -1))
        else:
            raise ValueError(f"unknown direction {direction!r}")
        seconds = time.perf_counter() - start
        return TransferResult(status=resp.status, bytes=received, seconds=seconds)
    finally:
        conn.close()


# -- the command line: run in a second process by bench/run.py ----------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] not in ("http", "transfer"):
        print("usage: loadgen.py http|transfer SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    if argv[0] == "http":
        result: Any = python_load(spec["host"], spec["port"], spec["path"], spec["header_sets"],
                                  spec["connections"], spec["duration"], spec["warmup"])
        print(json.dumps(asdict(result)))
    else:
        result = transfer(spec["host"], spec["port"], spec["path"], spec["headers"],
                          spec["direction"], spec["bytes"])
        print(json.dumps({**asdict(result), "mib_per_s": result.mib_per_s}))
    sys.stdout.flush()
    os._exit(0)  # do not wait for stuck daemon threads


if __name__ == "__main__":
    sys.exit(main())
