"""The ceiling: a bare Falcon app under waitress with the gateway's own serve settings
(``--asgi``: the same app as a native Falcon ASGI app under the default server, uvicorn, with
``serve``'s settings: the default server's ceiling).

It is also the benchmark's stub engine (the proxy rows compare the gateway against calling it
directly). Every figure in docs/PERFORMANCE.md is a ratio against this app measured in the
same run, so it does the least a Falcon app can do:

- ``GET /api/v1/system/health``: the gateway's health body, no database.
- ``GET /api/v1/bench/download?bytes=N``: N bytes, streamed in 256 KiB chunks.
- ``POST|PUT /api/v1/bench/upload``: reads the body in 256 KiB chunks, answers its size.
- anything else: ``{"engine": "stub", "path": <path>}``, like the tests' stub engine.

    .venv/bin/python bench/ceiling.py --port 8100 [--threads 8] [--max-body BYTES] [--asgi]
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import falcon
import falcon.asgi
import waitress

from gateway_kernel import cli as gateway_cli

CHUNK = 256 * 1024
HEALTH_BODY = json.dumps({"status": "healthy", "database": "connected"}).encode()
_ZEROS = bytes(CHUNK)


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = HEALTH_BODY


def _download(size: int):
    left = size
    while left > 0:
        n = min(left, CHUNK)
        yield _ZEROS if n == CHUNK else _ZEROS[:n]
        left -= n


def stub_sink(req: falcon.Request, resp: falcon.Response) -> None:
    path = req.path
    if path.endswith("/bench/download") and req.method in ("GET", "HEAD"):
        size = req.get_param_as_int("bytes", min_value=0, default=0)
        resp.content_type = "application/octet-stream"
        resp.content_length = size
        if req.method == "GET":
            resp.stream = _download(size)
        return
    if path.endswith("/bench/upload") and req.method in ("POST", "PUT"):
        received = 0
        stream = req.bounded_stream
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            received += len(chunk)
        resp.content_type = falcon.MEDIA_JSON
        resp.data = json.dumps({"received": received}).encode()
        return
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps({"engine": "stub", "path": path}).encode()


def create_app() -> falcon.App:
    app = falcon.App()
    app.req_options.auto_parse_form_urlencoded = False
    app.add_route("/api/v1/system/health", Health())
    app.add_sink(stub_sink, re.compile(r"^/(?!api/v1/system/health$)"))
    return app


class AsyncHealth:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = HEALTH_BODY


async def async_stub_sink(req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps({"engine": "stub", "path": req.path}).encode()


def create_asgi_app() -> falcon.asgi.App:
    """The ceiling's health and JSON answers as a native ASGI app (no transfers)."""
    app = falcon.asgi.App()
    app.req_options.auto_parse_form_urlencoded = False
    app.add_route("/api/v1/system/health", AsyncHealth())
    app.add_sink(async_stub_sink, re.compile(r"^/(?!api/v1/system/health$)"))
    return app


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
