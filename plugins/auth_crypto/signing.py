"""Produce Flowork auth headers for a private key: for scripts, tests and the CLI client.

    from gateway_plugins.auth_crypto.signing import Signer
    signer = Signer.new()                       # or Signer("0x<private key hex>")
    httpx.get(url, headers=signer.headers())    # legacy message, signed now
    httpx.get(url, headers=signer.siwe_headers(domain="localhost"))
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import time

from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct


def legacy_message(address: str, timestamp: int | None = None) -> str:
    """``flowork_api_auth|<address>|<unix seconds>``, what the Flowork GUI signs."""
    return f"flowork_api_auth|{address}|{int(time.time()) if timestamp is None else timestamp}"


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def siwe_message(
    address: str,
    domain: str = "localhost",
    *,
    issued_at: dt.datetime | None = None,
    expiration: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    lifetime_s: int = 3600,
    chain_id: int = 1,
    nonce: str | None = None,
    uri: str | None = None,
    statement: str | None = "Sign in to Flowork.",
) -> str:
    """An EIP-4361 (Sign-In with Ethereum) message."""
    issued = issued_at or dt.datetime.now(dt.UTC)
    expires = expiration or issued + dt.timedelta(seconds=lifetime_s)
    lines = [f"{domain} wants you to sign in with your Ethereum account:", address, ""]
    if statement is not None:
        lines += [statement, ""]
    lines += [
        f"URI: {uri or 'https://' + domain}",
        "Version: 1",
        f"Chain ID: {chain_id}",
        f"Nonce: {nonce or secrets.token_hex(8)}",
        f"Issued At: {_iso(issued)}",
        f"Expiration Time: {_iso(expires)}",
    ]
    if not_before is not None:
        lines.append(f"Not Before: {_iso(not_before)}")
    return "\n".join(lines)


def encode_b64_message(message: str) -> str:
    """``b64:`` + base64url without padding: how multi-line messages travel in a header."""
    return "b64:" + base64.urlsafe_b64encode(message.encode()).decode().rstrip("=")


class Signer:
    """A private key that signs Flowork auth messages (EIP-191 personal_sign)."""

    def __init__(self, private_key: str | bytes) -> None:
        self._account = EthAccount.from_key(private_key)

    @classmethod
    def new(cls) -> Signer:
        return cls("0x" + secrets.token_hex(32))

    @property
    def address(self) -> str:
        """EIP-55 checksummed address."""
        return self._account.address

    @property
    def private_key_hex(self) -> str:
        return "0x" + bytes(self._account.key).hex()

    def sign(self, message: str) -> str:
        """0x + 130 hex (r, s, v with v in {27, 28}), as ethers ``signMessage`` produces."""
        signed = self._account.sign_message(encode_defunct(text=message))
        return "0x" + bytes(signed.signature).hex()

    def headers(self, timestamp: int | None = None, message: str | None = None) -> dict[str, str]:
        """Auth headers for a legacy message signed now (or at ``timestamp``)."""
        text = message if message is not None else legacy_message(self.address, timestamp)
        return {
            "X-User-Address": self.address,
            "X-Signature": self.sign(text),
            "X-Signed-Message": text,
            "X-Payload-Version": "2",
        }

    def siwe_headers(self, domain: str = "localhost", **kwargs: object) -> dict[str, str]:
        """Auth headers for a SIWE message (see :func:`siwe_message` for options)."""
        text = siwe_message(self.address, domain, **kwargs)  # type: ignore[arg-type]
        return {
            "X-User-Address": self.address,
            "X-Signature": self.sign(text),
            "X-Signed-Message": encode_b64_message(text),
        }


def socket_message(address: str, timestamp: int | None = None) -> str:
    """``flowork_socket_auth|<address>|<unix seconds>``: what the GUI signs for its socket."""
    return f"flowork_socket_auth|{address}|{int(time.time()) if timestamp is None else timestamp}"
