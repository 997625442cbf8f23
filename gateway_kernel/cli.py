"""``flowork-gateway``: serve, migrate, plugins, routes, and the commands plugins add."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence

from .api import Command
from .app import API_PREFIX, Gateway, available_plugins, create_gateway
from .config import ConfigError

log = logging.getLogger("gateway_kernel.cli")

# Waitress settings that keep slow or idle clients from pinning every worker thread.
DEFAULT_THREADS = 8
CHANNEL_TIMEOUT_S = 60  # idle connection closed after this
CONNECTION_LIMIT = 200  # open sockets beyond this wait in the listen backlog


def waitress_options(gateway: Gateway | None = None) -> dict[str, object]:
    """The waitress settings of ``serve`` (also used by bench/ceiling.py, the baseline app).

    With a gateway, also its request body bound (waitress refuses a body whose size reaches
    ``max_request_body_size``, hence the + 1: a limit of 1 GiB admits exactly 1 GiB)."""
    options: dict[str, object] = {
        "channel_timeout": CHANNEL_TIMEOUT_S,
        "connection_limit": CONNECTION_LIMIT,
        "ident": "flowork-gateway",
        # Waitress 3 strips X-Forwarded-* by default; trust is decided per peer by the proxy
        # plugin (FLOWORK_TRUSTED_PROXIES), so the headers must reach the app.
        "clear_untrusted_proxy_headers": False,
    }
    if gateway is not None:
        options["max_request_body_size"] = gateway.request_body_limit + 1
    return options


def _build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowork-gateway",
        description="Flowork Gateway. Settings come from the environment (see README).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="migrate the database, then serve the API (waitress)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    sub.add_parser("migrate", help="apply pending database migrations")
    plugins = sub.add_parser("plugins", help="list enabled plugins, their hooks, models, routes")
    plugins.add_argument("--all", action="store_true", help="also list installed, disabled ones")
    sub.add_parser("routes", help="list every route with its owner and principal kind")
    for command in commands:
        command.configure(sub.add_parser(command.name, help=command.help))
    return parser


def _plugin_commands(gateway: Gateway | None) -> list[Command]:
    if gateway is None:
        return []
    commands: list[Command] = []
    for items in gateway.hook.gateway_commands():
        commands.extend(items)
    return commands


#: Libraries that log every request at INFO: one line (and a locked stderr write) per proxied
#: request, with the engine URL and query string in it. Their warnings still show.
_CHATTY_LOGGERS = ("httpx", "httpcore")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    argv = list(sys.argv[1:] if argv is None else argv)
    gateway: Gateway | None = None
    config_error: ConfigError | None = None
    try:
        gateway = create_gateway()
    except ConfigError as exc:
        config_error = exc
    parser = _build_parser(_plugin_commands(gateway))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if gateway is None:
        print(f"flowork-gateway: configuration error: {config_error}", file=sys.stderr)
        return 2
    try:
        return _run(gateway, args)
    except ConfigError as exc:
        print(f"flowork-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    finally:
        gateway.close()


def _run(gateway: Gateway, args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(gateway, args)
    if args.command == "migrate":
        applied = gateway.migrate()
        print("\n".join(applied) if applied else "database is up to date")
        return 0
    if args.command == "plugins":
        _print_plugins(gateway, show_all=args.all)
        return 0
    if args.command == "routes":
        _print_routes(gateway)
        return 0
    for command in _plugin_commands(gateway):
        if command.name == args.command:
            if command.needs_database:
                gateway.migrate()
            token = gateway.activate()
            try:
                return command.run(gateway, args)
            finally:
                from .db import deactivate

                deactivate(token)
    raise AssertionError(f"unhandled command {args.command}")


def _serve(gateway: Gateway, args: argparse.Namespace) -> int:
    import waitress

    gateway.migrate()
    gateway.start()
    log.info("serving on http://%s:%s%s (threads=%s)", args.host, args.port, API_PREFIX,
             args.threads)
    # Everything alive now (modules, plugins, route tables) lives as long as the process:
    # move it out of the cyclic collector's sight, so full collections under load only walk
    # what requests allocate.
    gc.collect()
    gc.freeze()
    server = waitress.create_server(
        gateway, host=args.host, port=args.port, threads=args.threads, **waitress_options(gateway)
    )
    drop_stalled_readers(server)
    server.print_listen("Serving on http://{}:{}")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0


def drop_stalled_readers(server: object) -> None:
    """Close connections whose client stopped reading a response for ``channel_timeout``.

    Waitress's own channel_timeout skips connections with a request in progress, so a client
    that never reads a large (proxied) download pins a worker thread forever once waitress's
    output buffer is full. This extends its periodic maintenance to those connections.
    """
    from waitress.server import BaseWSGIServer

    servers = [server] if isinstance(server, BaseWSGIServer) else [
        s for s in getattr(server, "map", {}).values() if isinstance(s, BaseWSGIServer)]
    for each in servers:
        original = each.maintenance

        def maintenance(now: float, each: BaseWSGIServer = each, original=original) -> None:
            original(now)
            cutoff = now - each.adj.channel_timeout
            for channel in list(each.active_channels.values()):
                if (channel.connected and channel.requests and channel.total_outbufs_len
                        and channel.last_activity < cutoff):
                    # handle_close must run on the event-loop thread: ask it through the trigger.
                    each.trigger.pull_trigger(channel.handle_close)

        each.maintenance = maintenance


def _print_plugins(gateway: Gateway, show_all: bool) -> None:
    for info in gateway.plugin_info():
        print(f"{info.name} {info.version} (enabled){' - ' + info.description if info.description else ''}")
        if info.requires:
            print(f"  requires: {', '.join(info.requires)}")
        print(f"  hooks:    {', '.join(info.hooks) or '-'}")
        print(f"  models:   {', '.join(info.models) or '-'}")
        print(f"  routes:   {', '.join(info.routes) or '-'}")
    if show_all:
        for name, target in sorted(available_plugins().items()):
            if name not in gateway.plugins:
                print(f"{name} (installed, not enabled) -> {target}")


def _print_routes(gateway: Gateway) -> None:
    import falcon

    rows = []
    for plugin, route in gateway.routes:
        for method in sorted(falcon.COMBINED_METHODS):
            if method != "OPTIONS" and hasattr(route.resource, f"on_{method.lower()}"):
                rows.append((API_PREFIX + route.path, method, route.auth_for(method), plugin))
    for plugin, sink in gateway.sinks:
        rows.append((API_PREFIX + sink.prefix.rstrip("/") + "/**", "*", sink.auth, plugin))
    width = max((len(r[0]) for r in rows), default=10)
    for path, method, auth, plugin in rows:
        print(f"{method:7} {path:{width}}  {auth:8} {plugin}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
