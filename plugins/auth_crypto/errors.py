"""Error codes auth_crypto answers (API.md lists them; the scheme's ``error_codes``)."""

from __future__ import annotations

MISSING_AUTH = "missing_auth"  # 401: no (or incomplete) signature headers
MALFORMED_MESSAGE = "malformed_message"  # 401: a header or the signed message is malformed
STALE_SIGNATURE = "stale_signature"  # 401: the signed message expired or is from the future
ADDRESS_MISMATCH = "address_mismatch"  # 401: the message names another address
INVALID_SIGNATURE = "invalid_signature"  # 401: the signature does not verify
REVOKED = "revoked"  # 401: signed before the account's logout cut-off
SIGNATURE_EXPOSED = "signature_exposed"  # 401: forwarded to a third party's engine
INVALID_IDENTIFIER = "invalid_identifier"  # 400: an address failing its EIP-55 checksum

#: Every 401 code of the user scheme, in the order the OpenAPI document lists them.
UNAUTHORIZED_CODES = (MISSING_AUTH, MALFORMED_MESSAGE, STALE_SIGNATURE, ADDRESS_MISMATCH,
                      INVALID_SIGNATURE, REVOKED, SIGNATURE_EXPOSED)
