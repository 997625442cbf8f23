"""Serve a gateway over ASGI with uvicorn, for the realtime tests (a subprocess).

``flowork-gateway serve`` serves ASGI once the kernel has it (``Gateway.asgi``); until then
this script wraps the WSGI app with uvicorn's WSGI middleware and mounts the plugins' ASGI
wrappers itself. Usage: python realtime_serve.py PORT (settings from the environment).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn
from uvicorn.middleware.wsgi import WSGIMiddleware

from gateway_kernel import create_gateway


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    port = int(sys.argv[1])
    gateway = create_gateway()
    gateway.migrate()
    app = WSGIMiddleware(gateway, workers=8)
    for wrapped in gateway.hook.gateway_asgi_middleware(gateway=gateway, app=app):
        app = wrapped

    async def lifespan_app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    gateway.loop = asyncio.get_running_loop()
                    gateway.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await app(scope, receive, send)

    uvicorn.run(lifespan_app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
