"""The killswitch plugin's CLI command (entry point ``flowork_gateway.commands``):
``flowork-gateway components list|disable ID --reason …|enable ID``.

Light on purpose: ``flowork-gateway --help`` imports this module to list the commands, so the
work (models, database) is imported only when the command runs. The CLI changes the table
only: it runs in its own process, without the realtime socket loop, so it announces nothing
(``flowork_kill_switch_changed``); engines see the change at their next poll.
"""

from __future__ import annotations

import argparse
import sys

from gateway_kernel.api import Command


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="components_action", metavar="ACTION", required=True)
    sub.add_parser("list", help="list disabled components with reasons")
    disable_p = sub.add_parser("disable", help="disable a component (engines stop running it)")
    disable_p.add_argument("component_id", help="the component's id, as engines know it")
    disable_p.add_argument("--reason", default="", help="why, shown to operators (default: none)")
    enable_p = sub.add_parser("enable", help="enable a disabled component again")
    enable_p.add_argument("component_id", help="the component's id, as engines know it")


def _run(gateway: object, args: argparse.Namespace) -> int:
    from gateway_kernel.errors import GatewayError
    from gateway_kernel.http import isoformat

    from .models import REASON_MAX, DisabledComponent, disable, enable
    from .resources import check_component_id

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


COMMANDS = [
    Command(
        name="components",
        help="kill switch: list, disable or enable components",
        configure=_configure,
        run=_run,
    ),
]
