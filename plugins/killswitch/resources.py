"""The kill switch's routes: ``GET /system/disabled-components`` and
``PUT``/``DELETE /system/disabled-components/{component_id}`` (service principal)."""

from __future__ import annotations

import re

import falcon

from gateway_kernel import Gateway
from gateway_kernel.http import isoformat, read_json_object, send_json

from . import errors
from .models import REASON_MAX, DisabledComponent, disable, disabled_ids, enable

#: Component ids as Flowork uses them (module names, UUIDs, dotted ids); never a path.
COMPONENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def check_component_id(component_id: str) -> str:
    """``component_id`` if well-formed; else 400 ``invalid_component_id``."""
    if not COMPONENT_ID.match(component_id):
        raise errors.invalid_component_id()
    return component_id


def component_json(row: DisabledComponent) -> dict[str, str | None]:
    return {"component_id": row.component_id, "reason": row.reason,
            "disabled_at": isoformat(row.disabled_at)}


class DisabledComponents:
    """GET /system/disabled-components."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, disabled_ids())


class DisabledComponentItem:
    """PUT/DELETE /system/disabled-components/{component_id}; each change is announced
    (``flowork_kill_switch_changed``) after it is committed."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_put(self, req: falcon.Request, resp: falcon.Response, component_id: str) -> None:
        check_component_id(component_id)
        reason = read_json_object(req).get("reason", "")
        if reason is None:
            reason = ""
        if not isinstance(reason, str) or len(reason.strip()) > REASON_MAX:
            raise errors.invalid_reason(REASON_MAX)
        row = disable(component_id, reason.strip())
        self.gateway.hook.flowork_kill_switch_changed(component_id=component_id, disabled=True)
        send_json(resp, component_json(row))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, component_id: str) -> None:
        check_component_id(component_id)
        if not enable(component_id):
            raise errors.not_disabled()
        self.gateway.hook.flowork_kill_switch_changed(component_id=component_id, disabled=False)
        send_json(resp, {"message": f"Component {component_id} enabled"})
