"""The ceiling: a bare Falcon app under waitress with the gateway's own serve settings
(``--asgi``: the same app as a native Falcon ASGI app under the default server, uvicorn, with
``serve``'s settings: the default server's ceiling).

The app is the stub engine of the tests (``tests/support/stub_engine.py``), so this is also the
benchmark's stub engine (the proxy rows compare the gateway against calling it directly).
Every figure in docs/PERFORMANCE.md is a ratio against this app measured in the same run, so it
does the least a Falcon app can do:

- ``GET /api/v1/system/health``: the gateway's health body, no database.
- ``GET /api/v1/bench/download?bytes=N``: N bytes, streamed in 256 KiB chunks.
- ``POST|PUT /api/v1/bench/upload``: reads the body in 256 KiB chunks, answers its size.
- anything else: ``{"engine": "stub", "path": <target>}``, as the tests' stub engine does.

    .venv/bin/python bench/ceiling.py --port 8100 [--threads 8] [--max-body BYTES] [--asgi]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import waitress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

from gateway_kernel import cli as gateway_cli
from tests.support.stub_engine import create_app, create_asgi_app


def serve_asgi(host: str, port: int) -> None:
    from gateway_kernel.serving import ServerPolicy, listen, run_uvicorn

    run_uvicorn(create_asgi_app(), listen(host, port), ServerPolicy())


def serve(host: str, port: int, threads: int, max_body: int | None = None) -> None:
    """waitress with exactly the settings ``flowork-gateway serve`` uses (unless ``max_body``)."""
    options = gateway_cli.waitress_options()
    options["ident"] = "bench-ceiling"
    if max_body is not None:
        options["max_request_body_size"] = max_body
    waitress.serve(create_app(), host=host, port=port, threads=threads, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=gateway_cli.DEFAULT_THREADS)
    parser.add_argument("--max-body", type=int, default=None,
                        help="waitress max_request_body_size (the stub engine takes 1 GiB+)")
    parser.add_argument("--asgi", action="store_true",
                        help="the ASGI app under the default server (uvicorn) instead")
    args = parser.parse_args(argv)
    if args.asgi:
        serve_asgi(args.host, args.port)
    else:
        serve(args.host, args.port, args.threads, args.max_body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
