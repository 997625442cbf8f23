"""Error codes auth_crypto answers (API.md lists them; the scheme's ``error_codes``), and the
helpers that raise them: no other module of the plugin spells a code."""

from __future__ import annotations

import math

from gateway_kernel.errors import GatewayError, bad_request, unauthorized

MISSING_AUTH = "missing_auth"  # 401: no (or incomplete) signature headers
MALFORMED_MESSAGE = "malformed_message"  # 401: a header or the signed message is malformed
STALE_SIGNATURE = "stale_signature"  # 401: the signed message expired or is from the future
ADDRESS_MISMATCH = "address_mismatch"  # 401: the message names another address
INVALID_SIGNATURE = "invalid_signature"  # 401: the signature does not verify
REVOKED = "revoked"  # 401: signed before the account's logout cut-off
SIGNATURE_EXPOSED = "signature_exposed"  # 401: forwarded to a third party's engine
INVALID_IDENTIFIER = "invalid_identifier"  # 400: an address failing its EIP-55 checksum
NOT_IMPLEMENTED = "not_implemented"  # 501: /auth/register and /auth/login

#: Every 401 code of the user scheme, in the order the OpenAPI document lists them.
UNAUTHORIZED_CODES = (MISSING_AUTH, MALFORMED_MESSAGE, STALE_SIGNATURE, ADDRESS_MISMATCH,
                      INVALID_SIGNATURE, REVOKED, SIGNATURE_EXPOSED)


def refused(code: str, message: str) -> GatewayError:
    """401 with one of :data:`UNAUTHORIZED_CODES` (a parsed message's own refusal code)."""
    return unauthorized(message, code=code)


def missing_auth(message: str) -> GatewayError:
    """401 ``missing_auth``: no, or not all, of the signature headers."""
    return unauthorized(message, code=MISSING_AUTH)


def malformed_message(message: str) -> GatewayError:
    """401 ``malformed_message``: a header or the signed message is malformed."""
    return unauthorized(message, code=MALFORMED_MESSAGE)


def invalid_signature(message: str) -> GatewayError:
    """401 ``invalid_signature``: the signature is malformed or was made by another key."""
    return unauthorized(message, code=INVALID_SIGNATURE)


def revoked(retry_after: float) -> GatewayError:
    """401 ``revoked``; ``Retry-After``: seconds until a message signed now is past the
    cut-off (0 once it already is)."""
    return GatewayError(401, REVOKED, "This signature was revoked by a logout; sign again",
                        {"Retry-After": str(max(0, math.ceil(retry_after)))})


def signature_exposed() -> GatewayError:
    """401 ``signature_exposed``: the signed message was forwarded to a third party's engine."""
    return unauthorized(
        "This signature was forwarded to an engine you do not own and "
        "is no longer accepted here; sign a new message", code=SIGNATURE_EXPOSED)


def invalid_identifier() -> GatewayError:
    """400 ``invalid_identifier``: a mixed-case address whose EIP-55 checksum is wrong."""
    return bad_request("Address fails its EIP-55 checksum", code=INVALID_IDENTIFIER)


def not_implemented() -> GatewayError:
    """501 ``not_implemented``: there is nothing to register or log in to."""
    return GatewayError(
        501, NOT_IMPLEMENTED,
        "Not Implemented: accounts are created on the first signed request; sign a "
        "message with your wallet instead",
    )
