"""The kill switch: component ids that engines must not run.

Engines poll ``GET /system/disabled-components`` (a bare array, as the real engine expects);
the admin service and operators change it through the PUT/DELETE routes or the CLI
(``flowork-gateway components list|disable ID --reason …|enable ID``).
"""

from __future__ import annotations

import argparse
import re
import sys

import falcon

from gateway_kernel import Gateway, utcnow
from gateway_kernel.errors import GatewayError, bad_request, not_found
from gateway_kernel.http import isoformat, read_json_object, send_json

from . import errors as codes
from .models import DisabledComponent

REASON_MAX = 500
#: Component ids as Flowork uses them (module names, UUIDs, dotted ids); never a path.
COMPONENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def check_component_id(component_id: str) -> str:
    if not COMPONENT_ID.match(component_id):
        raise bad_request(
            "component_id must be 1-128 characters: letters, digits, '_', '.', ':', '-'",
            codes.INVALID_COMPONENT_ID,
        )
    return component_id


def disabled_ids() -> list[str]:
    query = DisabledComponent.select(DisabledComponent.component_id).order_by(
        DisabledComponent.component_id
    )
    return [row[0] for row in query.tuples()]


def disable(component_id: str, reason: str) -> DisabledComponent:
    """Disable (or update the reason of) a component; ``disabled_at`` keeps the first time.

    One transaction: the upsert locks the row, so a concurrent enable (DELETE) cannot remove
    it before it is read back."""
    with DisabledComponent._meta.database.atomic():
        DisabledComponent.insert(
            component_id=component_id, reason=reason, disabled_at=utcnow()
        ).on_conflict(
            conflict_target=[DisabledComponent.component_id],
            update={DisabledComponent.reason: reason},
        ).execute()
        return DisabledComponent.get_by_id(component_id)


def enable(component_id: str) -> bool:
    """Re-enable a component; False if it was not disabled."""
    return bool(
        DisabledComponent.delete().where(DisabledComponent.component_id == component_id).execute()
    )


def component_json(row: DisabledComponent) -> dict[str, str | None]:
    return {"component_id": row.component_id, "reason": row.reason,
            "disabled_at": isoformat(row.disabled_at)}


class DisabledComponents:
    """GET /system/disabled-components."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, disabled_ids())


class DisabledComponentItem:
    """PUT/DELETE /system/disabled-components/{component_id}."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_put(self, req: falcon.Request, resp: falcon.Response, component_id: str) -> None:
        check_component_id(component_id)
        reason = read_json_object(req).get("reason", "")
        if reason is None:
            reason = ""
        if not isinstance(reason, str) or len(reason.strip()) > REASON_MAX:
            raise bad_request(f"'reason' must be a string of at most {REASON_MAX} characters")
        row = disable(component_id, reason.strip())
        self.gateway.hook.flowork_kill_switch_changed(component_id=component_id, disabled=True)
        send_json(resp, component_json(row))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, component_id: str) -> None:
        check_component_id(component_id)
        if not enable(component_id):
            raise not_found("Component is not disabled")
        self.gateway.hook.flowork_kill_switch_changed(component_id=component_id, disabled=False)
        send_json(resp, {"message": f"Component {component_id} enabled"})


# -- CLI (declared in commands.py) ------------------------------------------------------


def run_command(gateway: Gateway, args: argparse.Namespace) -> int:
    action = args.components_action
    if action == "list":
        rows = DisabledComponent.select().order_by(DisabledComponent.component_id)
        for row in rows:
            print(f"{row.component_id}\t{isoformat(row.disabled_at)}\t{row.reason}")
        return 0
    try:
        component_id = check_component_id(args.component_id)
    except GatewayError as exc:
        print(f"flowork-gateway components: {exc.message}", file=sys.stderr)
        return 2
    if action == "disable":
        if len(args.reason) > REASON_MAX:
            print(f"flowork-gateway components: reason longer than {REASON_MAX} characters",
                  file=sys.stderr)
            return 2
        row = disable(component_id, args.reason.strip())
        print(f"disabled {row.component_id} (since {isoformat(row.disabled_at)})")
        return 0
    if enable(component_id):
        print(f"enabled {component_id}")
        return 0
    print(f"flowork-gateway components: {component_id} is not disabled", file=sys.stderr)
    return 1
