"""auth_crypto: the ``user`` principal from Ethereum signatures, and the /auth/* routes.

The scheme is in :mod:`.scheme`, the settings in :mod:`.settings`, the routes in
:mod:`.resources`, the OpenAPI part in :mod:`.spec`, the error codes in :mod:`.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import peewee

from gateway_kernel import Account, AuthScheme, GatewayPlugin, Principal, Route, hookimpl

from . import accounts, spec
from .models import MIGRATIONS, Revocation, SpentSignature
from .resources import LogoutResource, NotImplementedResource, ProfileResource
from .scheme import CryptoUserScheme
from .settings import SETTINGS, AuthCryptoConfig

if TYPE_CHECKING:
    from gateway_kernel import Gateway


class AuthCryptoPlugin(GatewayPlugin):
    name = "auth_crypto"
    version = "0.1.0"
    description = "User principals from Ethereum signatures (legacy message and SIWE)"
    settings = SETTINGS

    scheme: CryptoUserScheme

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        cfg = AuthCryptoConfig.from_config(gateway.config)
        self.scheme = CryptoUserScheme(gateway, cfg.policy, cache=cfg.cache)

    @hookimpl
    def gateway_models(self) -> list[type[peewee.Model]]:
        return [Revocation, SpentSignature]

    @hookimpl
    def gateway_credential_exposed(self, gateway: Gateway, principal: Principal,
                                   audience: str) -> None:
        if principal.scheme == self.scheme.name:
            self.scheme.expose(principal, audience)

    @hookimpl
    def gateway_migrations(self) -> list:
        return list(MIGRATIONS)

    @hookimpl
    def gateway_auth_schemes(self, gateway: Gateway) -> list[AuthScheme]:
        return [self.scheme]

    @hookimpl
    def gateway_routes(self, gateway: Gateway) -> list[Route]:
        return [
            Route("/auth/profile", ProfileResource(gateway), "user"),
            Route("/auth/logout", LogoutResource(self.scheme), "user"),
            Route("/auth/register", NotImplementedResource(), "public"),
            Route("/auth/login", NotImplementedResource(), "public"),
        ]

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        return spec.openapi_part()

    # -- accounts --------------------------------------------------------------------------

    @hookimpl
    def gateway_account_defaults(self, address: str) -> dict[str, Any] | None:
        return accounts.account_defaults(address)

    @hookimpl
    def gateway_resolve_account(self, gateway: Gateway, identifier: str) -> Account | None:
        return accounts.resolve_account(gateway, identifier)

    @hookimpl
    def gateway_user_permissions(self, gateway: Gateway, account: Account) -> list[str]:
        return list(accounts.DEFAULT_PERMISSIONS)
