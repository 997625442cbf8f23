"""auth_internal's two schemes: ``engine`` principals (X-Engine-Token) and ``service``
principals (X-API-Key). Each states the headers it reads, its error codes and its OpenAPI
security scheme."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import falcon

from gateway_kernel import AuthScheme, Principal

from . import errors as codes

if TYPE_CHECKING:
    from gateway_kernel import Gateway

ENGINE_HEADER = "X-Engine-Token"
SERVICE_HEADER = "X-API-Key"


class EngineTokenScheme(AuthScheme):
    """``engine`` principals: the presented token is handed to the ``flowork_engine_by_token``
    hook (the engines plugin issues tokens and owns the table; this scheme does not know the
    token format)."""

    name = "engine_token"
    kind = "engine"
    headers = (ENGINE_HEADER,)
    error_codes = {401: (codes.INVALID_ENGINE_TOKEN,)}

    def openapi_security_schemes(self) -> dict[str, dict[str, Any]]:
        return {"EngineToken": {"type": "apiKey", "in": "header", "name": ENGINE_HEADER,
                                "description": "dev_engine_ + 30 base62 + 6 base62 CRC32"}}

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def missing(self) -> Exception:
        return codes.invalid_engine_token(f"{ENGINE_HEADER} is missing")

    def authenticate(self, req: falcon.Request) -> Principal | None:
        token = req.get_header(ENGINE_HEADER)
        if token is None:
            return None
        # The answering plugin checks the format and checksum before any query, so a
        # malformed or made-up token never reaches the database.
        identity = self.gateway.hook.flowork_engine_by_token(token=token)
        if identity is None:
            raise codes.invalid_engine_token(f"{ENGINE_HEADER} is not a valid token")
        return Principal(
            kind="engine",
            scheme=self.name,
            engine_id=identity.engine_id,
            claims={"owner_account_id": identity.owner_account_id},
        )


class ServiceKeyScheme(AuthScheme):
    """``service`` principals: X-API-Key equal to GATEWAY_SECRET_TOKEN (constant time)."""

    name = "api_key"
    kind = "service"
    headers = (SERVICE_HEADER,)
    error_codes = {401: (codes.INVALID_API_KEY,), 503: (codes.SERVICE_AUTH_NOT_CONFIGURED,)}

    def openapi_security_schemes(self) -> dict[str, dict[str, Any]]:
        return {"ApiKey": {"type": "apiKey", "in": "header", "name": SERVICE_HEADER,
                           "description": "the gateway's GATEWAY_SECRET_TOKEN"}}

    def __init__(self, secret: str | None) -> None:
        # Empty counts as unset: service routes are then closed, never open.
        self.secret = secret.encode("utf-8") if secret else None

    def secrets(self) -> tuple[bytes, ...]:
        return (self.secret,) if self.secret else ()

    def missing(self) -> Exception:
        if self.secret is None:
            return codes.service_auth_not_configured()
        return codes.invalid_api_key(f"{SERVICE_HEADER} is missing")

    def authenticate(self, req: falcon.Request) -> Principal | None:
        if self.secret is None:
            raise codes.service_auth_not_configured()
        key = req.get_header(SERVICE_HEADER)
        if key is None:
            return None
        # WSGI headers are latin-1 decoded: re-encoding gives back the bytes that were sent.
        try:
            sent = key.encode("latin-1")
        except UnicodeEncodeError:
            sent = b""
        if not hmac.compare_digest(sent, self.secret):
            raise codes.invalid_api_key(f"{SERVICE_HEADER} is wrong")
        return Principal(kind="service", scheme=self.name)
