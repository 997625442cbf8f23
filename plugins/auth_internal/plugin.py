"""auth_internal: ``engine`` principals (X-Engine-Token) and ``service`` principals (X-API-Key)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import falcon

from gateway_kernel import AuthScheme, GatewayPlugin, Principal, Setting, hookimpl
from gateway_kernel.config import as_secret
from gateway_kernel.errors import unauthorized, unavailable

from . import errors as codes
from .tokens import is_well_formed, token_digest

if TYPE_CHECKING:
    from gateway_kernel import Gateway

_ENGINE_HEADER = "X-Engine-Token"
_SERVICE_HEADER = "X-API-Key"


class EngineTokenScheme(AuthScheme):
    """``engine`` principals: the token's digest is looked up through the
    ``flowork_engine_by_token_digest`` hook (the engines plugin owns the table)."""

    name = "engine_token"
    kind = "engine"
    headers = (_ENGINE_HEADER,)
    error_codes = {401: (codes.INVALID_ENGINE_TOKEN,)}

    def openapi_security_schemes(self) -> dict[str, dict[str, Any]]:
        return {"EngineToken": {"type": "apiKey", "in": "header", "name": _ENGINE_HEADER,
                                "description": "dev_engine_ + 30 base62 + 6 base62 CRC32"}}

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def missing(self) -> Exception:
        return unauthorized(codes.INVALID_ENGINE_TOKEN, "X-Engine-Token is missing")

    def authenticate(self, req: falcon.Request) -> Principal | None:
        token = req.get_header(_ENGINE_HEADER)
        if token is None:
            return None
        # Format and CRC checksum first: a made-up token never reaches the database.
        if not is_well_formed(token):
            raise unauthorized(codes.INVALID_ENGINE_TOKEN, "X-Engine-Token is not a valid token")
        identity = self.gateway.hook.flowork_engine_by_token_digest(digest=token_digest(token))
        if identity is None:
            raise unauthorized(codes.INVALID_ENGINE_TOKEN, "X-Engine-Token is not a valid token")
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
    headers = (_SERVICE_HEADER,)
    error_codes = {401: (codes.INVALID_API_KEY,), 503: (codes.SERVICE_AUTH_NOT_CONFIGURED,)}

    def openapi_security_schemes(self) -> dict[str, dict[str, Any]]:
        return {"ApiKey": {"type": "apiKey", "in": "header", "name": _SERVICE_HEADER,
                           "description": "the gateway's GATEWAY_SECRET_TOKEN"}}

    def __init__(self, secret: str | None) -> None:
        # Empty counts as unset: service routes are then closed, never open.
        self.secret = secret.encode("utf-8") if secret else None

    def secrets(self) -> tuple[bytes, ...]:
        return (self.secret,) if self.secret else ()

    def _not_configured(self) -> Exception:
        return unavailable(codes.SERVICE_AUTH_NOT_CONFIGURED,
                           "Service authentication is not configured (GATEWAY_SECRET_TOKEN)")

    def missing(self) -> Exception:
        if self.secret is None:
            return self._not_configured()
        return unauthorized(codes.INVALID_API_KEY, "X-API-Key is missing")

    def authenticate(self, req: falcon.Request) -> Principal | None:
        if self.secret is None:
            raise self._not_configured()
        key = req.get_header(_SERVICE_HEADER)
        if key is None:
            return None
        # WSGI headers are latin-1 decoded: re-encoding gives back the bytes that were sent.
        try:
            sent = key.encode("latin-1")
        except UnicodeEncodeError:
            sent = b""
        if not hmac.compare_digest(sent, self.secret):
            raise unauthorized(codes.INVALID_API_KEY, "X-API-Key is wrong")
        return Principal(kind="service", scheme=self.name)


class AuthInternalPlugin(GatewayPlugin):
    name = "auth_internal"
    version = "0.1.0"
    description = "Engine principals (X-Engine-Token) and service principals (X-API-Key)"
    settings = (
        Setting("GATEWAY_SECRET_TOKEN", as_secret(32), None,
                "shared secret of internal services (X-API-Key), at least 32 characters; "
                "unset = service routes 503",
                secret=True, credential="service"),
    )

    engine_scheme: EngineTokenScheme
    service_scheme: ServiceKeyScheme

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        self.engine_scheme = EngineTokenScheme(gateway)
        self.service_scheme = ServiceKeyScheme(gateway.config["GATEWAY_SECRET_TOKEN"])

    @hookimpl
    def gateway_auth_schemes(self, gateway: Gateway) -> list[AuthScheme]:
        return [self.engine_scheme, self.service_scheme]
