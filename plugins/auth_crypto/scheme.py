"""auth_crypto's ``user`` scheme: who signed the request, checked cheapest first, with the
verified-signature and account caches, the logout cut-off and the spent-signature record."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import falcon
import peewee

from gateway_kernel import Account, AuthScheme, Param, Prepared, Principal

from . import errors as codes
from . import messages
from .cache import ExpiringCache
from .messages import MessageError, Policy
from .models import Revocation, SpentSignature
from .verify import InvalidSignature, is_address, parse_signature, recover_address

if TYPE_CHECKING:
    from gateway_kernel import Gateway

#: How many verified (address, message, signature) triples one instance remembers.
VERIFIED_CACHE_SIZE = 20_000
#: How many accounts (with their logout cut-off) one instance remembers, and for how long.
#: The TTL bounds how late a logout made on another instance is seen (API.md: within 5 s).
ACCOUNT_CACHE_SIZE = 20_000
ACCOUNT_TTL_S = 2.0

HEADER_ADDRESS = "X-User-Address"
HEADER_SIGNATURE = "X-Signature"
HEADER_MESSAGE = "X-Signed-Message"
HEADER_VERSION = "X-Payload-Version"


#: The account and its logout cut-off in one query (per cache miss; SQL built once).
ACCOUNT_WITH_CUTOFF = Prepared(lambda: (
    Account.select(Account, Revocation.revoked_before)
    .join(Revocation, peewee.JOIN.LEFT_OUTER, on=(Revocation.account == Account.id))
    .where(Account.address == Param("address"))
    .limit(1)
    .objects()
))


#: Where a signed message was exposed, if it was and has not expired (run per request).
SPENT_AUDIENCE = Prepared(lambda: (
    SpentSignature.select(SpentSignature.audience)
    .where((SpentSignature.digest == Param("digest")) & (SpentSignature.expires_at > Param("now")))
    .limit(1)
))
#: Expired spent-signature rows are purged at most this often (per instance).
SPENT_PURGE_EVERY_S = 60.0


def _naive_utc(unix_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).replace(tzinfo=None)


def _epoch(value: dt.datetime) -> float:
    """Naive-UTC datetime from the database → unix seconds."""
    return value.replace(tzinfo=dt.UTC).timestamp()


@dataclass(frozen=True)
class Verified:
    """A signature that passed every check; valid until ``expires_at`` (unix s)."""

    address: str  # canonical lowercase
    issued_at: float
    expires_at: float
    kind: str


@dataclass(frozen=True)
class CachedAccount:
    account: Account
    revoked_before: float | None  # unix s; messages issued at or before it are refused


class CryptoUserScheme(AuthScheme):
    """``user`` principals from X-User-Address / X-Signature / X-Signed-Message."""

    name = "crypto"
    kind = "user"
    headers = (HEADER_ADDRESS, HEADER_SIGNATURE, HEADER_MESSAGE, HEADER_VERSION)
    error_codes = {401: codes.UNAUTHORIZED_CODES}

    def openapi_security_schemes(self) -> dict[str, dict[str, Any]]:
        return {
            "UserAddress": {"type": "apiKey", "in": "header", "name": HEADER_ADDRESS,
                            "description": "0x address, any case"},
            "UserSignature": {"type": "apiKey", "in": "header", "name": HEADER_SIGNATURE,
                              "description": "EIP-191 personal_sign: 0x + 130 hex"},
            "UserSignedMessage": {
                "type": "apiKey", "in": "header", "name": HEADER_MESSAGE,
                "description": "flowork_api_auth|<address>|<unix seconds>, or b64: + "
                               "base64url of an EIP-4361 message",
            },
        }

    def __init__(self, gateway: Gateway, policy: Policy, cache: bool = True) -> None:
        self.gateway = gateway
        self.policy = policy
        # cache=False (FLOWORK_AUTH_CACHE=off): caches that keep nothing, so every request
        # recovers its signer and reads its account (the benchmark's original design).
        self.verified: ExpiringCache[Verified] = ExpiringCache(VERIFIED_CACHE_SIZE if cache else 0)
        self.accounts: ExpiringCache[CachedAccount] = ExpiringCache(
            ACCOUNT_CACHE_SIZE if cache else 0)
        #: Spent messages this instance has seen (spent is final until expiry, so a hit needs
        #: no query; a miss always asks the database, which every instance shares).
        self.spent: ExpiringCache[str] = ExpiringCache(VERIFIED_CACHE_SIZE if cache else 0)
        self._next_purge = 0.0
        #: Wall clock (unix seconds) for message validity; tests may replace it.
        self.clock: Callable[[], float] = time.time

    def missing(self) -> Exception:
        return codes.missing_auth(
            f"Authentication required: send {HEADER_ADDRESS}, {HEADER_SIGNATURE} and "
            f"{HEADER_MESSAGE}")

    def authenticate(self, req: falcon.Request) -> Principal | None:
        address = req.get_header(HEADER_ADDRESS)
        signature = req.get_header(HEADER_SIGNATURE)
        text = req.get_header(HEADER_MESSAGE)
        if address is None and signature is None and text is None:
            return None
        if not address or not signature or not text:
            raise self.missing()
        # Size caps before anything else touches the values.
        if len(address) > 42 or len(signature) > 132 or len(text) > messages.MAX_MESSAGE_HEADER:
            raise codes.malformed_message("An authentication header is too long")
        now = self.clock()
        # A realtime sign-in (the realtime plugin sets this on the request it builds) may
        # also use the socket message format; the flag is part of the cache key, so a
        # socket signature never passes as a REST one.
        socket = getattr(req.context, "socket_sign_in", False) is True
        # Long (SIWE) messages are keyed by digest so a full cache stays a few MB.
        message_key = text if len(text) <= 128 else hashlib.sha256(
            text.encode("utf-8", "surrogatepass")).digest()
        key = (address.lower(), message_key, signature.lower(), socket)
        verified = self.verified.get(key, now)
        fresh = verified is None
        if verified is None:
            verified = self.verify(address, signature, text, now, socket)
        cached = self.account(verified.address)
        if cached.revoked_before is not None and verified.issued_at <= cached.revoked_before:
            raise codes.revoked(cached.revoked_before - now)
        if fresh:  # only successes are cached, and never beyond the message's validity
            self.verified.put(key, verified, verified.expires_at)
        digest = hashlib.sha256(f"{verified.address}\n{text}".encode(
            "utf-8", "surrogatepass")).hexdigest()
        return Principal(
            kind="user",
            scheme=self.name,
            account=cached.account,
            claims={"address": verified.address, "issued_at": verified.issued_at,
                    "expires_at": verified.expires_at, "message": verified.kind,
                    "credential": digest},
            audience=self.spent_audience(digest, now),
        )

    def exposed(self, principal: Principal) -> Exception:
        return codes.signature_exposed()

    def spent_audience(self, digest: str, now: float) -> str | None:
        """The engine this signed message was exposed to, or None (one indexed lookup)."""
        audience = self.spent.get(digest, now)
        if audience is not None:
            return audience
        row = SPENT_AUDIENCE.first(digest=digest, now=_naive_utc(now))
        return None if row is None else row.audience

    def expose(self, principal: Principal, audience: str) -> None:
        """Record that ``principal``'s signed message is being shown to ``audience``.

        The first audience wins: later ones are refused by ``Gateway.check_audience``."""
        digest = principal.claims.get("credential")
        if not digest:
            return
        expires = float(principal.claims["expires_at"])
        now = self.clock()
        (SpentSignature.insert(digest=digest, audience=audience, expires_at=_naive_utc(expires))
         .on_conflict_ignore().execute())
        self.spent.put(digest, audience, expires)
        if now >= self._next_purge:  # keep the table as small as the live signatures
            self._next_purge = now + SPENT_PURGE_EVERY_S
            SpentSignature.delete().where(SpentSignature.expires_at <= _naive_utc(now)).execute()

    def verify(self, address: str, signature: str, text: str, now: float,
               socket: bool = False) -> Verified:
        """Every check, cheapest first; the key is recovered only if all others pass."""
        if not is_address(address):
            raise codes.malformed_message(f"{HEADER_ADDRESS} must be a 0x address")
        try:
            message = messages.parse(text, socket)
            if message.address.lower() != address.lower():
                raise MessageError(
                    codes.ADDRESS_MISMATCH, "The signed message names another address than "
                    f"{HEADER_ADDRESS}",
                )
            expires = messages.check(message, self.policy, now)
            vrs = parse_signature(signature)
        except MessageError as exc:
            raise codes.refused(exc.code, str(exc)) from None
        except InvalidSignature as exc:
            raise codes.invalid_signature(f"Invalid signature: {exc}") from None
        try:
            signer = recover_address(message.text, vrs)
        except InvalidSignature as exc:
            raise codes.invalid_signature(f"Invalid signature: {exc}") from None
        if signer != bytes.fromhex(address[2:]):
            raise codes.invalid_signature(f"The signature was not made by {HEADER_ADDRESS}")
        return Verified(address.lower(), message.issued_at, expires, message.kind)

    def account(self, address: str) -> CachedAccount:
        """The account and its logout cut-off: one query at most every ACCOUNT_TTL_S."""
        now = time.monotonic()
        cached = self.accounts.get(address, now)
        if cached is not None:
            return cached
        row = ACCOUNT_WITH_CUTOFF.first(address=address)
        if row is None:  # first successful auth: register (safe under concurrency)
            cached = CachedAccount(self.gateway.ensure_account(address), None)
        else:
            cutoff = getattr(row, "revoked_before", None)
            cached = CachedAccount(row, _epoch(cutoff) if cutoff is not None else None)
        self.accounts.put(address, cached, now + ACCOUNT_TTL_S)
        return cached

    def logout(self, account: Account, message_issued_at: float) -> float:
        """Refuse every message of ``account`` dated at or before the cut-off (all instances,
        via the DB); return the cut-off (unix s).

        The cut-off is the later of now and the logout message's own date, plus the allowed
        future skew: any message signed before the logout, even one dated ahead, is at or
        before it. A cut-off never moves back (a concurrent logout keeps the later one)."""
        latest = max(self.clock(), message_issued_at) + self.policy.future_skew_s
        cutoff = dt.datetime.fromtimestamp(math.ceil(latest), dt.UTC).replace(tzinfo=None)
        excluded = peewee.EXCLUDED.revoked_before
        (
            Revocation.insert(account=account.id, revoked_before=cutoff)
            .on_conflict(
                conflict_target=[Revocation.account],
                update={Revocation.revoked_before: peewee.Case(
                    None, [(Revocation.revoked_before < excluded, excluded)],
                    Revocation.revoked_before)},
            )
            .execute()
        )
        self.accounts.discard(account.address)  # the next request reads the stored cut-off
        return _epoch(cutoff)
