"""The killswitch plugin: component ids that engines must not run.

Engines poll ``GET /system/disabled-components`` (a bare array, as the real engine expects);
the admin service and operators change it through ``PUT``/``DELETE`` or the ``components``
CLI command (commands.py). A change made through the routes is announced with the hook this plugin
declares, ``flowork_kill_switch_changed`` (hookspecs.py), which realtime answers.
"""

from __future__ import annotations

from typing import Any

from gateway_kernel import Gateway, GatewayPlugin, Route, hookimpl

from .models import MIGRATIONS, MODELS
from .resources import DisabledComponentItem, DisabledComponents
from .spec import openapi_part


class KillSwitchPlugin(GatewayPlugin):
    name = "killswitch"
    version = "0.1.0"
    description = "Kill switch: component ids engines must not run (routes and CLI)"

    @hookimpl
    def gateway_models(self) -> list[Any]:
        return list(MODELS)

    @hookimpl
    def gateway_migrations(self) -> list[Any]:
        return list(MIGRATIONS)

    @hookimpl
    def gateway_routes(self, gateway: Gateway) -> list[Route]:
        return [
            Route("/system/disabled-components", DisabledComponents(), "service"),
            Route("/system/disabled-components/{component_id}",
                  DisabledComponentItem(gateway), "service"),
        ]

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        return openapi_part()
