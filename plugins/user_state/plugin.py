"""The user_state plugin: small per-user GUI state, ``GET/PUT /user/state/{key}``."""

from __future__ import annotations

from typing import Any

from gateway_kernel import Gateway, GatewayPlugin, Route, hookimpl

from .models import MIGRATIONS, MODELS
from .resources import UserStateItem
from .settings import SETTINGS, UserStateConfig
from .spec import openapi_part


class UserStatePlugin(GatewayPlugin):
    name = "user_state"
    version = "0.1.0"
    settings = SETTINGS
    description = "Per-user GUI state: one JSON value per key"

    def __init__(self) -> None:
        self.cfg = UserStateConfig()

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        self.cfg = UserStateConfig.from_config(gateway.config)

    @hookimpl
    def gateway_models(self) -> list[Any]:
        return list(MODELS)

    @hookimpl
    def gateway_migrations(self) -> list[Any]:
        return list(MIGRATIONS)

    @hookimpl
    def gateway_routes(self, gateway: Gateway) -> list[Route]:
        return [Route("/user/state/{key}", UserStateItem(gateway, self.cfg.max_keys), "user")]

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        return openapi_part()
