"""The realtime plugin's OpenAPI part: Socket.IO is not REST, so no fake paths; the document's
description and a tag point at the socket API's own document (docs/REALTIME.md)."""

from __future__ import annotations

from typing import Any

SUMMARY = (
    "Realtime: Socket.IO (protocol 5) on /socket.io/ and /api/socket.io/, same host and port "
    "as this API. Namespace /engine-socket: engines sign in with their token, register their "
    "URL, report vitals and receive pushes. Namespace /gui-socket: GUIs sign in with their "
    "signature headers, get engine status and relay commands to their engines. Events, "
    "payloads and error codes: docs/REALTIME.md."
)


def openapi_part() -> dict[str, Any]:
    return {
        "description": SUMMARY,
        "tags": [{"name": "realtime", "description": SUMMARY}],
    }
