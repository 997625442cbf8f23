"""Error codes the realtime plugin sends (REST codes where one exists), and their payloads.

Refusals travel as Socket.IO data, never as exceptions: ``error_payload`` for events,
``refuse_connection`` for a refused connect (``{"message", "data": {"code"}}`` on the wire).
"""

from __future__ import annotations

from typing import Any

import socketio

NOT_FOUND = "not_found"
ENGINE_OFFLINE = "engine_offline"
INVALID_ENGINE_TOKEN = "invalid_engine_token"  # noqa: S105 - an error code
NOT_AUTHENTICATED = "not_authenticated"
AUTH_TIMEOUT = "auth_timeout"
UNKNOWN_EVENT = "unknown_event"
INVALID_PAYLOAD = "invalid_payload"
PAYLOAD_TOO_LARGE = "payload_too_large"
RATE_LIMITED = "rate_limited"
INTERNAL = "internal_error"


def error_payload(code: str, message: str) -> dict[str, Any]:
    return {"error": message, "code": code}


def refuse_connection(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    return socketio.exceptions.ConnectionRefusedError(message, {"code": code})
