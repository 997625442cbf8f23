"""Serve a gateway's ASGI app with uvicorn, for the realtime tests (a subprocess).

Used while ``flowork-gateway serve`` still defaults to waitress: the kernel's ``Gateway.asgi``
(with the plugins' ASGI wrappers, its lifespan sets ``gateway.loop`` and runs the startup
hooks) under uvicorn. Usage: python realtime_serve.py PORT (settings from the environment).
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from gateway_kernel import create_gateway


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    gateway = create_gateway()
    gateway.migrate()
    gateway.server = "uvicorn"
    uvicorn.run(gateway.asgi, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                lifespan="on")


if __name__ == "__main__":
    main()
