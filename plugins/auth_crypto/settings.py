"""Settings of auth_crypto, declared for the kernel and resolved once at configure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway_kernel import Setting
from gateway_kernel.config import Config, as_list, as_seconds, as_str

from .messages import Policy


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


SETTINGS = (
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


@dataclass(frozen=True)
class AuthCryptoConfig:
    """The plugin's settings, parsed: the message rules and the cache switch."""

    policy: Policy
    #: FLOWORK_AUTH_CACHE: off keeps nothing, so every request recovers its signer and reads
    #: its account.
    cache: bool = True

    @classmethod
    def from_config(cls, config: Config) -> AuthCryptoConfig:
        return cls(
            policy=Policy(
                domain=config["FLOWORK_GATEWAY_DOMAIN"].lower(),
                window_s=config["FLOWORK_AUTH_WINDOW_S"],
                future_skew_s=config["FLOWORK_AUTH_FUTURE_SKEW_S"],
                siwe_max_lifetime_s=config["FLOWORK_SIWE_MAX_LIFETIME_S"],
                chain_ids=config["FLOWORK_SIWE_CHAIN_IDS"],
            ),
            cache=config["FLOWORK_AUTH_CACHE"],
        )
