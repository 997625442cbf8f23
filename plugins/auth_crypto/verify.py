"""EIP-191 personal_sign verification: signature parsing, low-s normalisation, recovery.

Recovery calls coincurve (libsecp256k1) directly, never eth_keys' environment-dependent
default backend (``ECC_BACKEND_CLASS`` can make that pure Python, ~100x slower); going
around eth_keys' key objects also saves ~10 % of a recovery.
"""

from __future__ import annotations

import re

import coincurve
from eth_hash.auto import keccak
from eth_keys import KeyAPI
from eth_keys.backends import CoinCurveECCBackend
from eth_keys.exceptions import BadSignature, ValidationError

#: Order of the secp256k1 group.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2

SIGNATURE_RE = re.compile(r"0x[0-9a-fA-F]{130}")
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")

BACKEND = CoinCurveECCBackend()
KEYS = KeyAPI(backend=BACKEND)


class InvalidSignature(ValueError):
    """The signature is malformed or does not recover to a public key."""


def eip191_hash(message: bytes) -> bytes:
    """keccak256 of the EIP-191 version 0x45 envelope (what personal_sign signs)."""
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def parse_signature(signature: str) -> tuple[int, int, int]:
    """``0x`` + 130 hex → (v in {0, 1}, r, low s).

    v may be 0/1 or 27/28. A high-s signature is folded onto its low-s twin (s → n - s,
    v flipped), which recovers the same key: one signature, one identity.
    """
    if not SIGNATURE_RE.fullmatch(signature):
        raise InvalidSignature("X-Signature must be 0x followed by 130 hex digits")
    raw = bytes.fromhex(signature[2:])
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1):
        raise InvalidSignature("signature v must be 0, 1, 27 or 28")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise InvalidSignature("signature r or s out of range")
    if s > _HALF_N:
        s = SECP256K1_N - s
        v ^= 1
    return v, r, s


def recover_address(message: bytes, vrs: tuple[int, int, int]) -> bytes:
    """The 20-byte address whose key made ``vrs`` over ``message`` (EIP-191)."""
    v, r, s = vrs
    try:
        # coincurve itself (what CoinCurveECCBackend.ecdsa_recover calls), whatever
        # ECC_BACKEND_CLASS says; r and s are range-checked by parse_signature.
        public_key = coincurve.PublicKey.from_signature_and_message(
            r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((v,)),
            eip191_hash(message), hasher=None,
        )
    except (ValueError, TypeError, BadSignature, ValidationError) as exc:
        raise InvalidSignature("signature does not recover to a public key") from exc
    # The address: the last 20 bytes of keccak256 of the 64-byte uncompressed key.
    return keccak(public_key.format(compressed=False)[1:])[-20:]


def is_address(value: str) -> bool:
    return ADDRESS_RE.fullmatch(value) is not None


def to_checksum_address(address: str) -> str:
    """EIP-55 form of a 0x address (any case in)."""
    lower = address[2:].lower()
    digest = keccak(lower.encode("ascii")).hex()
    pairs = zip(lower, digest[:40], strict=True)
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in pairs)


def is_acceptable_case(address: str) -> bool:
    """All-lowercase or all-uppercase hex, or mixed case passing the EIP-55 checksum."""
    body = address[2:]
    if body == body.lower() or body == body.upper():
        return True
    return to_checksum_address(address) == address
