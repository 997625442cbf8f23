"""The engines plugin's CLI commands (entry point ``flowork_gateway.commands``).

Light on purpose: ``flowork-gateway --help`` imports this module to list the commands, so the
work (models, database) is imported only when a command runs.
"""

from __future__ import annotations

import argparse

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
    from .components import run_command

    return run_command(gateway, args)


COMMANDS = [
    Command(
        name="components",
        help="kill switch: list, disable or enable components",
        configure=_configure,
        run=_run,
    ),
]
