"""Engine tokens, which the engines plugin issues (API.md): ``dev_engine_`` + 30 random
base62 + 6 base62 CRC32.

The checksum (GitHub-style) lets the gateway refuse a mistyped or made-up token without a
database query; only the SHA-256 digest of a token is ever stored. The engine-token scheme
(auth_internal) does not know this format: it hands the presented token to the
``flowork_engine_by_token`` hook, which this plugin answers with :func:`is_well_formed` first
and then one indexed lookup of :func:`token_digest`.

A published module of the engines plugin: tests and tools mint and digest tokens with it.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib

PREFIX = "dev_engine_"
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_RANDOM_LEN = 30
_CHECK_LEN = 6
TOKEN_LEN = len(PREFIX) + _RANDOM_LEN + _CHECK_LEN
_ALLOWED = frozenset(ALPHABET)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode("ascii")), _CHECK_LEN)


def new_engine_token() -> str:
    """A fresh token (about 178 random bits) from ``secrets``."""
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(_RANDOM_LEN))
    return PREFIX + random_part + _checksum(random_part)


def is_well_formed(token: str) -> bool:
    """Format and checksum valid: cheap, no database."""
    if len(token) != TOKEN_LEN or not token.startswith(PREFIX):
        return False
    body = token[len(PREFIX):]
    if not _ALLOWED.issuperset(body):
        return False
    random_part, check = body[:_RANDOM_LEN], body[_RANDOM_LEN:]
    return secrets.compare_digest(_checksum(random_part), check)


def token_digest(token: str) -> str:
    """Hex SHA-256 of the token: the only form stored."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()
