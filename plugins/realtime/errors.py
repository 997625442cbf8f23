"""Error codes the realtime plugin sends (REST codes where one exists), and their payloads.

Refusals travel as Socket.IO data, never as exceptions: ``error_payload`` for events,
``refuse_connection`` for a refused connect (``{"message", "data": {"code"}}`` on the wire).
"""

from __future__ import annotations

from typing import Any

import falcon
import socketio

from gateway_kernel.errors import GatewayError, envelope_for
from gateway_plugins.engines.api import ENGINE_OFFLINE as ENGINE_OFFLINE_CODE

NOT_FOUND = "not_found"
#: The same code as the REST answer (the proxy contract's, which engines raises).
ENGINE_OFFLINE = ENGINE_OFFLINE_CODE
INVALID_ENGINE_TOKEN = "invalid_engine_token"  # noqa: S105 - an error code
NOT_AUTHENTICATED = "not_authenticated"
AUTH_TIMEOUT = "auth_timeout"
UNKNOWN_EVENT = "unknown_event"
INVALID_PAYLOAD = "invalid_payload"
PAYLOAD_TOO_LARGE = "payload_too_large"
RATE_LIMITED = "rate_limited"
INTERNAL = "internal_error"


def error_payload(code: str, message: str) -> dict[str, Any]:
    """An ``error`` event's payload (and a refused command's, on its reply event)."""
    return {"error": message, "code": code}


def auth_failed_payload(code: str, message: str) -> dict[str, Any]:
    """The ``auth_failed`` event's payload (an engine socket's refused sign-in)."""
    return {"message": message, "error": message, "code": code}


def refuse_connection(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    return socketio.exceptions.ConnectionRefusedError(message, {"code": code})


def refused(error: Exception, where: str = "") -> socketio.exceptions.ConnectionRefusedError:
    """A refused connect for a kernel error (a scheme's 401, say), with its REST code;
    ``where`` is appended to the message (where the credential was expected)."""
    if isinstance(error, falcon.HTTPError):
        code, message = envelope_for(error)
    else:
        code, message = INTERNAL, "The sign-in could not be checked"
    return refuse_connection(code, f"{message} {where}" if where else message)


def invalid_engine_token(message: str) -> GatewayError:
    """An engine socket's ``auth`` that cannot be the engine's token (401, as over REST)."""
    return GatewayError(401, INVALID_ENGINE_TOKEN, message)
