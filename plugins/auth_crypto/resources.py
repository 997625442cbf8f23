"""The /auth/* routes: the signed-in user's profile, logout, and the two that do not exist."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon

from gateway_kernel import Account
from gateway_kernel.http import isoformat, send_json

from . import errors as codes

if TYPE_CHECKING:
    from gateway_kernel import Gateway

    from .scheme import CryptoUserScheme


def profile(gateway: Gateway, account: Account) -> dict[str, Any]:
    return {
        "user_id": account.public_address,
        "public_address": account.public_address,
        "username": account.username,
        "email": account.email,
        "tier": account.tier,
        "permissions": gateway.user_permissions(account),
        "license_expires_at": isoformat(account.license_expires_at),
    }


class ProfileResource:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, profile(self.gateway, req.context.principal.account))


class LogoutResource:
    def __init__(self, scheme: CryptoUserScheme) -> None:
        self.scheme = scheme

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = req.context.principal
        # Another user scheme's principal carries no message date: the cut-off is then now.
        self.scheme.logout(principal.account, principal.claims.get("issued_at", 0.0))
        send_json(resp, {"message": "Logged out: signatures made until now no longer work"})


class NotImplementedResource:
    """Accounts come from signatures; there is nothing to register or log in to."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise codes.not_implemented()
