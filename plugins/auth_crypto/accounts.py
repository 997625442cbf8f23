"""Accounts named by Ethereum address: the defaults of a new one, resolving an identifier
(an owner names a guest by address), and the permissions every user has."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway_kernel import Account

from . import errors as codes
from .verify import is_acceptable_case, is_address, to_checksum_address

if TYPE_CHECKING:
    from gateway_kernel import Gateway

#: Permissions every user has unless another plugin's hook adds more.
DEFAULT_PERMISSIONS: tuple[str, ...] = (
    "engines:read",
    "engines:write",
    "engines:share",
    "workflows:share",
    "state:read",
    "state:write",
)


def account_defaults(address: str) -> dict[str, Any] | None:
    """A new account's profile when ``address`` is a 0x address (else None: not ours)."""
    if not is_address(address):
        return None
    checksummed = to_checksum_address(address)
    return {
        "public_address": checksummed,
        "username": checksummed,
        "email": address.lower() + "@flowork.crypto",
        "tier": "architect",
    }


def resolve_account(gateway: Gateway, identifier: str) -> Account | None:
    """The account of a 0x address (created if new), None for another kind of identifier;
    400 ``invalid_identifier`` for a mixed-case address failing its EIP-55 checksum."""
    value = identifier.strip()
    if not is_address(value):
        return None
    if not is_acceptable_case(value):
        raise codes.invalid_identifier()
    return gateway.ensure_account(value.lower())
