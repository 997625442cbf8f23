"""The realtime plugin: Socket.IO for Core engines and the GUI, mounted in front of the
kernel's ASGI app; pushes for the change events the engines and sharing plugins announce."""

from __future__ import annotations

import logging
from typing import Any

from gateway_kernel import Gateway, GatewayPlugin, hookimpl

from .server import ALL_ENGINES, ENGINE_NS, GUI_NS, Realtime, engine_room, user_room
from .settings import SETTINGS, RealtimeConfig
from .spec import openapi_part

log = logging.getLogger("gateway_plugins.realtime")


class RealtimePlugin(GatewayPlugin):
    name = "realtime"
    version = "0.1.0"
    # Presence, shares and tokens come through hooks those plugins answer.
    requires = ("auth_crypto", "auth_internal", "engines", "sharing")
    settings = SETTINGS
    description = "Socket.IO for engines and GUIs: presence, pushes, command relay"

    def __init__(self) -> None:
        self.rt: Realtime | None = None

    @hookimpl
    def gateway_configure(self, gateway: Gateway) -> None:
        self.rt = Realtime(gateway, RealtimeConfig.from_config(gateway.config))

    @hookimpl
    def gateway_asgi_middleware(self, gateway: Gateway, app: Any) -> Any:
        return self._rt().asgi(app)

    @hookimpl
    def gateway_startup(self, gateway: Gateway) -> None:
        server = getattr(gateway, "server", None)
        if server == "waitress":
            log.warning("realtime: Socket.IO needs an ASGI server that upgrades connections; "
                        "under waitress engines and GUIs cannot connect (serve without "
                        "--server waitress)")
        loop = getattr(gateway, "loop", None)
        if loop is not None:  # startup hooks may run in a worker thread: hand over to the loop
            loop.call_soon_threadsafe(self._rt().bind_loop, loop)

    @hookimpl
    def gateway_shutdown(self, gateway: Gateway) -> None:
        if self.rt is not None:
            self.rt.release_all()

    @hookimpl
    def gateway_openapi(self, gateway: Gateway) -> dict[str, Any]:
        return openapi_part()

    # -- change events from REST calls (worker threads): pushed on the socket loop ----------

    @hookimpl
    def flowork_engine_shares_changed(self, engine_id: str, account_id: int, change: str) -> None:
        rt = self._rt()

        async def push() -> None:
            await rt.control("forget_access", engine_id=engine_id)
            await rt.sio.emit("force_refresh_auth_list", {}, to=engine_room(engine_id),
                              namespace=ENGINE_NS)
            event = {"created": "new_shared_engine", "revoked": "removed_shared_engine"}.get(change)
            if event is not None:
                await rt.sio.emit(event, {"engine_id": engine_id}, to=user_room(account_id),
                                  namespace=GUI_NS)

        rt.schedule(push)

    @hookimpl(optionalhook=True)  # killswitch declares it; without killswitch, never called
    def flowork_kill_switch_changed(self, component_id: str, disabled: bool) -> None:
        rt = self._rt()

        async def push() -> None:
            await rt.sio.emit("force_sync_kill_switch", {}, to=ALL_ENGINES, namespace=ENGINE_NS)

        rt.schedule(push)

    @hookimpl
    def flowork_engine_credentials_revoked(self, engine_id: str, owner_account_id: int,
                                           deleted: bool) -> None:
        rt = self._rt()

        async def push() -> None:
            await rt.control("revoke_engine", engine_id=engine_id)
            if deleted:
                await rt.sio.emit("engine_deleted", {"engine_id": engine_id},
                                  to=user_room(owner_account_id), namespace=GUI_NS)

        rt.schedule(push)

    def _rt(self) -> Realtime:
        if self.rt is None:
            raise RuntimeError("realtime plugin used before gateway_configure")
        return self.rt
