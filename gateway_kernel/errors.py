"""One JSON error envelope for every failure: ``{"error": "<text>", "code": "<code>"}``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import falcon

log = logging.getLogger("gateway_kernel")

# Falcon's own errors carry no machine code; these give them one, by status.
_CODE_BY_STATUS = {
    400: "invalid_body",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "too_many_requests",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


class GatewayError(falcon.HTTPError):
    """An error the gateway answers on purpose, with a stable machine ``code``.

    Raise it from any responder, hook or auth scheme; the kernel renders it as the envelope.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, headers=dict(headers) if headers else None)
        self.code = code
        self.message = message

    def to_dict(self, obj_type=dict):
        return obj_type(error=self.message, code=self.code)


def bad_request(message: str, *, code: str = "invalid_body") -> GatewayError:
    return GatewayError(400, code, message)


def not_found(message: str = "Not found", *, code: str = "not_found") -> GatewayError:
    return GatewayError(404, code, message)


def unauthorized(message: str, *, code: str) -> GatewayError:
    return GatewayError(401, code, message)


def conflict(message: str, *, code: str = "conflict") -> GatewayError:
    return GatewayError(409, code, message)


def limit_reached(what: str, limit: int, setting: str) -> GatewayError:
    """409 ``limit_reached``: a create beyond a per-user limit, naming the limit."""
    return GatewayError(409, "limit_reached",
                        f"Limit reached: at most {limit} {what} ({setting})")


def unavailable(message: str, *, code: str, retry_after: int | None = None) -> GatewayError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return GatewayError(503, code, message, headers)


def envelope_for(error: falcon.HTTPError) -> tuple[str, str]:
    """(code, message) for any Falcon error, ours or Falcon's own."""
    if isinstance(error, GatewayError):
        return error.code, error.message
    status = error.status_code
    code = _CODE_BY_STATUS.get(status, "error")
    message = error.title or falcon.code_to_http_status(status)
    if error.description:
        message = f"{message}: {error.description}"
    return code, message


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Falcon error serializer: always JSON, always the envelope, never content negotiation."""
    code, message = envelope_for(error)
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps({"error": message, "code": code}).encode()
    resp.append_header("Vary", "Accept")


def handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params) -> None:
    """Last-resort handler: log with the request id, answer an opaque 500."""
    if isinstance(ex, falcon.HTTPError):  # Falcon routes these here only if re-raised
        raise ex
    request_id = getattr(req.context, "request_id", "-")
    log.exception("unhandled error (request_id=%s, %s %s)", request_id, req.method, req.path)
    raise GatewayError(500, "internal_error", f"Internal server error (request id {request_id})")
