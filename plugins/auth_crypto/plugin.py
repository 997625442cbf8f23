"""auth_crypto: the ``user`` principal from Ethereum signatures, and the /auth/* routes."""

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

from gateway_kernel import (
    Account,
    AuthScheme,
    GatewayError,
    GatewayPlugin,
    Param,
    Prepared,
    Principal,
    Route,
    Setting,
    hookimpl,
)
from gateway_kernel.config import as_list, as_seconds, as_str
from gateway_kernel.errors import bad_request, unauthorized
from gateway_kernel.http import isoformat, send_json
from gateway_kernel.openapi import error, json_response, op, ref

from . import errors as codes
from . import messages
from .cache import ExpiringCache
from .messages import MessageError, Policy
from .models import MIGRATIONS, Revocation, SpentSignature
from .verify import (
    InvalidSignature,
    is_acceptable_case,
    is_address,
    parse_signature,
    recover_address,
    to_checksum_address,
)

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

#: How many verified (address, message, signature) triples one instance remembers.
VERIFIED_CACHE_SIZE = 20_000
#: How many accounts (with their logout cut-off) one instance remembers, and for how long.
#: The TTL bounds how late a logout made on another instance is seen (API.md: within 5 s).
ACCOUNT_CACHE_SIZE = 20_000
ACCOUNT_TTL_S = 2.0

_HEADER_ADDRESS = "X-User-Address"
_HEADER_SIGNATURE = "X-Signature"
_HEADER_MESSAGE = "X-Signed-Message"


def as_chain_ids(value: Any) -> frozenset[int]:
    items = as_list(value) if not isinstance(value, int) else [str(value)]
    try:
        return frozenset(int(item) for item in items)
    except ValueError:
        raise ValueError("expected comma-separated integer chain ids") from None


_ON = frozenset({"1", "on", "true", "yes"})
_OFF = frozenset({"0", "off", "false", "no"})


def as_switch(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise ValueError("expected on or off (1/0, true/false, yes/no)")


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
    headers = (_HEADER_ADDRESS, _HEADER_SIGNATURE, _HEADER_MESSAGE, "X-Payload-Version")
    error_codes = {401: codes.UNAUTHORIZED_CODES}

    def openapi_security_schemes(self) -> dict[str, dict[str, Any]]:
        return {
            "UserAddress": {"type": "apiKey", "in": "header", "name": _HEADER_ADDRESS,
                            "description": "0x address, any case"},
            "UserSignature": {"type": "apiKey", "in": "header", "name": _HEADER_SIGNATURE,
                              "description": "EIP-191 personal_sign: 0x + 130 hex"},
            "UserSignedMessage": {
                "type": "apiKey", "in": "header", "name": _HEADER_MESSAGE,
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
        return unauthorized(
            codes.MISSING_AUTH, "Authentication required: send X-User-Address, X-Signature and "
            "X-Signed-Message"
        )

    def authenticate(self, req: falcon.Request) -> Principal | None:
        address = req.get_header(_HEADER_ADDRESS)
        signature = req.get_header(_HEADER_SIGNATURE)
        text = req.get_header(_HEADER_MESSAGE)
        if address is None and signature is None and text is None:
            return None
        if not address or not signature or not text:
            raise self.missing()
        # Size caps before anything else touches the values.
        if len(address) > 42 or len(signature) > 132 or len(text) > messages.MAX_MESSAGE_HEADER:
            raise unauthorized(codes.MALFORMED_MESSAGE, "An authentication header is too long")
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
            raise revoked(cached.revoked_before - now)
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
        return unauthorized(
            codes.SIGNATURE_EXPOSED, "This signature was forwarded to an engine you do not own and "
            "is no longer accepted here; sign a new message")

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
            raise unauthorized(codes.MALFORMED_MESSAGE, "X-User-Address must be a 0x address")
        try:
            message = messages.parse(text, socket)
            if message.address.lower() != address.lower():
                raise MessageError(
                    codes.ADDRESS_MISMATCH, "The signed message names another address than "
                    "X-User-Address",
                )
            expires = messages.check(message, self.policy, now)
            vrs = parse_signature(signature)
        except MessageError as exc:
            raise unauthorized(exc.code, str(exc)) from None
        except InvalidSignature as exc:
            raise unauthorized(codes.INVALID_SIGNATURE, f"Invalid signature: {exc}") from None
        try:
            signer = recover_address(message.text, vrs)
        except InvalidSignature as exc:
            raise unauthorized(codes.INVALID_SIGNATURE, f"Invalid signature: {exc}") from None
        if signer != bytes.fromhex(address[2:]):
            raise unauthorized(codes.INVALID_SIGNATURE, "The signature was not made by X-User-Address")
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


def revoked(retry_after: float) -> GatewayError:
    """401 ``revoked``; ``Retry-After``: seconds until a message signed now is past the
    cut-off (0 once it already is)."""
    return GatewayError(401, codes.REVOKED, "This signature was revoked by a logout; sign again",
                        {"Retry-After": str(max(0, math.ceil(retry_after)))})


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
        raise GatewayError(
            501, "not_implemented",
            "Not Implemented: accounts are created on the first signed request; sign a "
            "message with your wallet instead",
        )


class AuthCryptoPlugin(GatewayPlugin):
    name = "auth_crypto"
    version = "0.1.0"
    description = "User principals from Ethereum signatures (legacy message and SIWE)"
    settings = (
        Setting("FLOWORK_GATEWAY_DOMAIN", as_str, "localhost",
                "the domain Sign-In with Ethereum messages must name"),
        Setting("FLOWORK_AUTH_WINDOW_S", as_seconds(1, 86400), 300.0,
                "legacy message freshness window, seconds"),
        Setting("FLOWORK_AUTH_FUTURE_SKEW_S", as_seconds(0, 3600), 15.0,
                "how far in the future a message timestamp may be, seconds"),
        Setting("FLOWORK_SIWE_MAX_LIFETIME_S", as_seconds(1, 30 * 86400), 86400.0,
                "longest Sign-In with Ethereum validity accepted, seconds"),
        Setting("FLOWORK_SIWE_CHAIN_IDS", as_chain_ids, frozenset(),
                "allowed chain ids, comma-separated (default: any)", allow_empty=False),
        Setting("FLOWORK_AUTH_CACHE", as_switch, True,
                "remember verified signatures and accounts for a few seconds (on/off; off "
                "recovers every signature and reads the account on every request)"),
    )

    scheme: CryptoUserScheme

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        config = gateway.config
        policy = Policy(
            domain=config["FLOWORK_GATEWAY_DOMAIN"].lower(),
            window_s=config["FLOWORK_AUTH_WINDOW_S"],
            future_skew_s=config["FLOWORK_AUTH_FUTURE_SKEW_S"],
            siwe_max_lifetime_s=config["FLOWORK_SIWE_MAX_LIFETIME_S"],
            chain_ids=config["FLOWORK_SIWE_CHAIN_IDS"],
        )
        self.scheme = CryptoUserScheme(gateway, policy, cache=config["FLOWORK_AUTH_CACHE"])

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

    # -- accounts --------------------------------------------------------------------------

    @hookimpl
    def gateway_account_defaults(self, address: str) -> dict[str, Any] | None:
        if not is_address(address):
            return None
        checksummed = to_checksum_address(address)
        return {
            "public_address": checksummed,
            "username": checksummed,
            "email": address.lower() + "@flowork.crypto",
            "tier": "architect",
        }

    @hookimpl
    def gateway_resolve_account(self, gateway: Gateway, identifier: str) -> Account | None:
        value = identifier.strip()
        if not is_address(value):
            return None
        if not is_acceptable_case(value):
            raise bad_request("Address fails its EIP-55 checksum", codes.INVALID_IDENTIFIER)
        return gateway.ensure_account(value.lower())

    @hookimpl
    def gateway_user_permissions(self, gateway: Gateway, account: Account) -> list[str]:
        return list(DEFAULT_PERMISSIONS)

    # -- OpenAPI ---------------------------------------------------------------------------

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        not_implemented = {501: error("Not implemented", "not_implemented")}
        return {
            "paths": {
                "/auth/profile": {"get": op(
                    "The signed-in user's profile (registers a new address)", "user",
                    {200: json_response(ref("Profile"))}, tags=["auth"])},
                "/auth/logout": {"post": op(
                    "Revoke every signature of this address made until now", "user",
                    {200: json_response(ref("AuthMessage"))}, tags=["auth"])},
                "/auth/register": {"post": op(
                    "Not implemented: accounts come from signatures", "public",
                    not_implemented, tags=["auth"])},
                "/auth/login": {"post": op(
                    "Not implemented: every request is signed", "public",
                    not_implemented, tags=["auth"])},
            },
            "components": {
                "schemas": {
                    "Profile": {
                        "type": "object",
                        "required": ["user_id", "public_address", "username", "email", "tier",
                                     "permissions", "license_expires_at"],
                        "properties": {
                            "user_id": {"type": "string", "description": "checksummed address"},
                            "public_address": {"type": "string"},
                            "username": {"type": "string"},
                            "email": {"type": "string"},
                            "tier": {"type": "string"},
                            "permissions": {"type": "array", "items": {"type": "string"}},
                            "license_expires_at": {"type": ["string", "null"],
                                                   "format": "date-time"},
                        },
                    },
                    "AuthMessage": {"type": "object", "required": ["message"],
                                "properties": {"message": {"type": "string"}}},
                },
            },
        }
