"""Settings of auth_internal, declared for the kernel and resolved once at configure."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway_kernel import Setting
from gateway_kernel.config import Config, as_secret

SETTINGS = (
    Setting("GATEWAY_SECRET_TOKEN", as_secret(32), None,
            "shared secret of internal services (X-API-Key), at least 32 characters; "
            "unset = service routes 503",
            secret=True, credential="service"),
)


@dataclass(frozen=True)
class AuthInternalConfig:
    """The plugin's settings, parsed."""

    #: GATEWAY_SECRET_TOKEN; None or empty: service routes answer 503, never open.
    service_secret: str | None = field(repr=False)

    @classmethod
    def from_config(cls, config: Config) -> AuthInternalConfig:
        return cls(service_secret=config["GATEWAY_SECRET_TOKEN"])
