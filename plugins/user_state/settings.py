"""Settings of the user_state plugin, declared for the kernel and resolved once at configure."""

from __future__ import annotations

from dataclasses import dataclass

from gateway_kernel import Setting
from gateway_kernel.config import Config, as_int

SETTINGS = (
    Setting("FLOWORK_LIMIT_STATE_KEYS_PER_USER", as_int(1, 10**9), 100,
            "GUI state keys one user may store (409 limit_reached beyond)"),
)


@dataclass(frozen=True)
class UserStateConfig:
    max_keys: int = 100

    @classmethod
    def from_config(cls, config: Config) -> UserStateConfig:
        return cls(max_keys=config["FLOWORK_LIMIT_STATE_KEYS_PER_USER"])
