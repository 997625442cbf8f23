"""Cost of user authentication: cold verification (coincurve), cached, and pure Python.

    .venv/bin/python bench/bench_auth.py [--smoke]

Prints a markdown table. Every row is measured in this one run on this machine, so compare
the ratios, not the absolute numbers (the machine is shared and noisy).

Rows:
- cached: ``CryptoUserScheme.authenticate`` on a request whose signature was seen before (the
  GUI's normal case: one signature, many requests): cache lookup, account cache, principal.
- cold, coincurve: every check plus key recovery through eth_keys' coincurve backend, on a
  signature never seen before (``CryptoUserScheme.verify``: no database).
- cold, pure Python: the same with recovery through eth_keys' NativeECCBackend, patched in
  the way ``bench/original_design.py`` reproduces the original design (the plugin itself
  always recovers with coincurve; ``ECC_BACKEND_CLASS`` no longer changes that).
- HTTP round trip, cached: a whole ``GET`` through Falcon's test client, for scale.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import falcon.testing

from gateway_kernel import GatewayPlugin, Route, create_gateway, hookimpl
from gateway_kernel.db import deactivate
from gateway_kernel.http import send_json
from gateway_plugins.auth_crypto.signing import Signer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from original_design import recovery_patched


class _Ping:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, {"ok": True})


class _PingPlugin(GatewayPlugin):
    name = "bench_ping"

    @hookimpl
    def gateway_routes(self, gateway) -> list[Route]:
        return [Route("/bench/ping", _Ping(), "user")]


def per_op(fn: Callable[[int], None], count: int, repeats: int) -> float:
    """Median over ``repeats`` runs of ``fn(i)`` for i in range(count), seconds per call."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        samples.append((time.perf_counter() - start) / count)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="few iterations (CI)")
    args = parser.parse_args(argv)
    cold_n, pure_n, cached_n, repeats = (40, 4, 2000, 3) if args.smoke else (400, 40, 50_000, 5)

    with tempfile.TemporaryDirectory() as tmp:
        gateway = create_gateway(environ={}, settings={
            "DATABASE_URL": f"sqlite:///{Path(tmp, 'bench.db').as_posix()}",
            "FLOWORK_PLUGINS": "auth_crypto,auth_internal",
        }, extra_plugins=[_PingPlugin()])
        gateway.migrate()
        scheme = gateway.plugins["auth_crypto"].scheme
        signer = Signer.new()
        now = int(time.time())
        # verify() never caches; distinct messages anyway, timestamps inside the window.
        cold = [signer.headers(timestamp=now - i % 250) for i in range(max(cold_n, pure_n))]

        def verify_cold(i: int) -> None:
            h = cold[i]
            scheme.verify(h["X-User-Address"], h["X-Signature"], h["X-Signed-Message"], now)

        warm = signer.headers()
        request = falcon.testing.create_req(path="/bench/ping", headers=warm)
        token = gateway.activate()
        try:
            scheme.authenticate(request)  # registers the user, fills both caches
            cached = per_op(lambda _i: scheme.authenticate(request), cached_n, repeats)
            coincurve_cold = per_op(verify_cold, cold_n, repeats)
            with recovery_patched():
                pure_cold = per_op(verify_cold, pure_n, repeats)
        finally:
            deactivate(token)
        client = falcon.testing.TestClient(gateway)
        http_warm = per_op(lambda _i: client.simulate_get("/api/v1/bench/ping", headers=warm),
                           max(cached_n // 20, 50), repeats)
        gateway.close()

    rows = [
        ("cached (authenticate, warm)", cached),
        ("cold, coincurve (verify)", coincurve_cold),
        ("cold, pure Python (verify, NativeECCBackend)", pure_cold),
        ("HTTP round trip, cached auth", http_warm),
    ]
    print("| auth path | µs per request | x cached |")
    print("|---|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds * 1e6:,.1f} | {seconds / cached:,.0f} |")
    print()
    print(f"pure Python / coincurve (cold): {pure_cold / coincurve_cold:,.0f}x; "
          f"coincurve cold / cached: {coincurve_cold / cached:,.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
