"""The two signed-message formats the gateway accepts, parsed and checked without crypto.

1. Legacy: ``flowork_api_auth|<address>|<unix seconds>`` (what the Flowork GUI signs).
2. Sign-In with Ethereum (EIP-4361), carried in a header as ``b64:`` + base64url.

Anything else is refused, so a signature made for another site never logs anyone in here.
Parsing is pure and cheap; the caller recovers the signature only after these checks pass.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass

from . import errors as codes
from .verify import is_acceptable_case, is_address

#: Longest X-Signed-Message header accepted (b64 of a SIWE message with a few resources).
MAX_MESSAGE_HEADER = 4096

LEGACY_RE = re.compile(r"flowork_api_auth\|(0x[0-9a-fA-F]{40})\|([0-9]{1,12})")
#: The realtime GUI's sign-in message: accepted only for socket sign-ins (``socket=True``),
#: with the legacy message's rules, so a socket signature is never a REST credential.
SOCKET_RE = re.compile(r"flowork_socket_auth\|(0x[0-9a-fA-F]{40})\|([0-9]{1,12})")
_B64_RE = re.compile(r"[A-Za-z0-9_-]*={0,2}")

_SIWE_PREAMBLE = " wants you to sign in with your Ethereum account:"
_DOMAIN_RE = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://)?([^\s/?#@]+)")
_NONCE_RE = re.compile(r"[A-Za-z0-9]{8,}")
_CHAIN_RE = re.compile(r"[0-9]{1,18}")
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]*")
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


class MessageError(ValueError):
    """The message is refused; ``code`` is the 401 error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SignedMessage:
    """What the signature covers and what the message claims."""

    kind: str  # "legacy" or "siwe"
    text: bytes  # the exact bytes that were personal_sign'ed
    address: str  # 0x address as written in the message
    issued_at: float  # unix seconds; compared with the logout cut-off
    expires_at: float | None = None  # SIWE only; legacy expiry comes from the window
    not_before: float | None = None
    domain: str = ""
    chain_id: int | None = None


def parse(header: str, socket: bool = False) -> SignedMessage:
    """Parse an ``X-Signed-Message`` header (format only; no clock, domain or crypto).

    ``socket``: the message signs a realtime connection, so ``flowork_socket_auth|…`` is
    accepted too."""
    if len(header) > MAX_MESSAGE_HEADER:
        raise MessageError(codes.MALFORMED_MESSAGE, "X-Signed-Message is too long")
    if header.startswith("b64:"):
        return parse_siwe(_decode_b64(header[4:]))
    match = LEGACY_RE.fullmatch(header)
    if match is None and socket:
        match = SOCKET_RE.fullmatch(header)
    if match is None:
        raise MessageError(
            codes.MALFORMED_MESSAGE,
            "X-Signed-Message must be 'flowork_api_auth|<address>|<unix seconds>' or "
            "'b64:' + base64url of a Sign-In with Ethereum message",
        )
    return SignedMessage(
        kind="legacy",
        text=header.encode("ascii"),
        address=match.group(1),
        issued_at=float(int(match.group(2))),
    )


def _decode_b64(data: str) -> str:
    if not _B64_RE.fullmatch(data):
        raise MessageError(codes.MALFORMED_MESSAGE, "X-Signed-Message: invalid base64url")
    try:
        raw = base64.urlsafe_b64decode(data.rstrip("=") + "=" * (-len(data.rstrip("=")) % 4))
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise MessageError(codes.MALFORMED_MESSAGE, "X-Signed-Message: invalid base64url") from None


def parse_rfc3339(value: str) -> float:
    """RFC 3339 date-time → unix seconds; an offset is required (Z or ±HH:MM)."""
    match = _RFC3339_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    if offset in ("Z", "z"):
        tz = dt.UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    when = dt.datetime(year, month, day, hour, minute, min(second, 59), tzinfo=tz)
    micro = float(fraction) if fraction else 0.0
    return when.timestamp() + micro


def parse_siwe(text: str) -> SignedMessage:
    """Parse an EIP-4361 message strictly, line by line, in the order the ABNF gives."""

    def bad(reason: str) -> MessageError:
        return MessageError(codes.MALFORMED_MESSAGE, f"Sign-In with Ethereum message: {reason}")

    lines = text.split("\n")
    if len(lines) < 8 or "\r" in text:
        raise bad("not a Sign-In with Ethereum message")
    header = lines[0]
    if not header.endswith(_SIWE_PREAMBLE):
        raise bad("first line must be '<domain> wants you to sign in with your Ethereum account:'")
    domain_match = _DOMAIN_RE.fullmatch(header[: -len(_SIWE_PREAMBLE)])
    if domain_match is None:
        raise bad("invalid domain")
    address = lines[1]
    if not is_address(address):
        raise bad("second line must be the 0x address")
    if not is_acceptable_case(address):
        raise bad("address fails its EIP-55 checksum")
    if lines[2] != "":
        raise bad("the address must be followed by an empty line")
    # Then "[statement LF] LF": statement + empty line, or one or two empty lines.
    i = 3
    if lines[i] == "":
        i += 1
    elif not lines[i].startswith("URI: "):
        if lines[i + 1] != "":
            raise bad("the statement must be one line followed by an empty line")
        i += 2
    fields: dict[str, str] = {}
    for key in ("URI", "Version", "Chain ID", "Nonce", "Issued At"):
        if i >= len(lines) or not lines[i].startswith(key + ": "):
            raise bad(f"expected '{key}: ' on line {i + 1}")
        fields[key] = lines[i][len(key) + 2:]
        i += 1
    for key in ("Expiration Time", "Not Before", "Request ID"):
        if i < len(lines) and lines[i].startswith(key + ": "):
            fields[key] = lines[i][len(key) + 2:]
            i += 1
    if i < len(lines) and lines[i] == "Resources:":
        i += 1
        while i < len(lines) and lines[i].startswith("- "):
            if not _URI_RE.fullmatch(lines[i][2:]):
                raise bad("invalid resource URI")
            i += 1
    if i != len(lines):
        raise bad(f"unexpected content on line {i + 1}")

    if not _URI_RE.fullmatch(fields["URI"]):
        raise bad("invalid URI")
    if fields["Version"] != "1":
        raise bad("Version must be 1")
    if not _CHAIN_RE.fullmatch(fields["Chain ID"]):
        raise bad("invalid Chain ID")
    if not _NONCE_RE.fullmatch(fields["Nonce"]):
        raise bad("Nonce must be at least 8 letters or digits")
    if not _REQUEST_ID_RE.fullmatch(fields.get("Request ID", "")):
        raise bad("invalid Request ID")
    if "Expiration Time" not in fields:
        raise bad("Expiration Time is required")
    try:
        issued = parse_rfc3339(fields["Issued At"])
        expires = parse_rfc3339(fields["Expiration Time"])
        not_before = parse_rfc3339(fields["Not Before"]) if "Not Before" in fields else None
    except (ValueError, OverflowError) as exc:
        raise bad(str(exc)) from None
    return SignedMessage(
        kind="siwe",
        text=text.encode("utf-8"),
        address=address,
        issued_at=issued,
        expires_at=expires,
        not_before=not_before,
        domain=domain_match.group(1).lower(),
        chain_id=int(fields["Chain ID"]),
    )


@dataclass(frozen=True)
class Policy:
    """The clock and domain rules, from the plugin's settings."""

    domain: str = "localhost"
    window_s: float = 300
    future_skew_s: float = 60
    siwe_max_lifetime_s: float = 86400
    chain_ids: frozenset[int] = frozenset()  # empty: any chain


def check(message: SignedMessage, policy: Policy, now: float) -> float:
    """Apply domain and clock rules; return the time (unix s) the message stops being valid."""
    if message.kind == "legacy":
        if message.issued_at > now + policy.future_skew_s:
            raise MessageError(codes.STALE_SIGNATURE, "Signed message timestamp is in the future")
        expires = message.issued_at + policy.window_s
        if now > expires:
            raise MessageError(codes.STALE_SIGNATURE, "Signed message has expired; sign a new one")
        return expires
    if message.domain != policy.domain:
        raise MessageError(codes.MALFORMED_MESSAGE, "Sign-In with Ethereum message is for another domain")
    if policy.chain_ids and message.chain_id not in policy.chain_ids:
        raise MessageError(codes.MALFORMED_MESSAGE, "Sign-In with Ethereum chain id is not allowed")
    assert message.expires_at is not None
    if message.expires_at <= message.issued_at:
        raise MessageError(codes.MALFORMED_MESSAGE, "Expiration Time must be after Issued At")
    if message.expires_at - message.issued_at > policy.siwe_max_lifetime_s:
        raise MessageError(
            codes.MALFORMED_MESSAGE,
            f"Sign-In with Ethereum lifetime exceeds {policy.siwe_max_lifetime_s:.15g} seconds",
        )
    if message.issued_at > now + policy.future_skew_s:
        raise MessageError(codes.STALE_SIGNATURE, "Issued At is in the future")
    if message.not_before is not None and now < message.not_before:
        raise MessageError(codes.STALE_SIGNATURE, "Sign-In with Ethereum message is not valid yet")
    if now >= message.expires_at:
        raise MessageError(codes.STALE_SIGNATURE, "Sign-In with Ethereum message has expired")
    return message.expires_at
