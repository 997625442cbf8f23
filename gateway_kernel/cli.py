"""``flowork-gateway``: serve, migrate, config, plugins, routes, and the commands plugins add.

Fast and robust before anything else: ``--help`` and the commands that need no settings
(``keygen``, ``call``) import neither Falcon, peewee nor any plugin, and plugin commands are
listed from the ``flowork_gateway.commands`` entry points even when the configuration is
broken; the error is shown when a command that needs the configuration runs. Operational
failures (driver missing, database unreachable, port in use) end in one line and a non-zero
exit: 2 for configuration and usage errors, 1 for everything else.
"""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .api import Command
from .config import Config, ConfigError, as_list, expand_plugin_names, redact

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("gateway_kernel.cli")

COMMANDS_ENTRY_POINT_GROUP = "flowork_gateway.commands"
EXIT_FAILURE = 1  # an operational failure: database, port, file
EXIT_USAGE = 2  # a configuration or usage error

SERVERS = ("uvicorn", "waitress")
# Waitress settings that keep slow or idle clients from pinning every worker thread.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_THREADS = 8  # waitress's threads (they also wait on slow clients)
CHANNEL_TIMEOUT_S = 60  # idle connection closed after this
CONNECTION_LIMIT = 200  # open sockets beyond this wait in the listen backlog


def waitress_options(gateway: Gateway | None = None) -> dict[str, object]:
    """The waitress settings of ``serve`` (also used by bench/ceiling.py, the baseline app).

    With a gateway, also its request body bound (waitress refuses a body whose size reaches
    ``max_request_body_size``, hence the + 1: a limit of 1 GiB admits exactly 1 GiB). Waitress
    spools a whole body before any code runs, so before authentication: the bound is the JSON
    limit unless a plugin (the proxy) raised it."""
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


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


BUILTIN_COMMANDS = ("serve", "migrate", "config", "plugins", "routes")


def _build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowork-gateway",
        description="Flowork Gateway: a plugin-based API gateway.",
        epilog="Settings come from the environment and the TOML file named by FLOWORK_CONFIG "
               "(see README); `flowork-gateway config` prints them with their sources. "
               "`flowork-gateway COMMAND --help` describes a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="migrate the database, then serve the API",
                           description="Apply pending migrations, then serve the API.")
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0: all IPv4)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT,
                       help=f"TCP port to listen on (default {DEFAULT_PORT})")
    serve.add_argument("--threads", type=_positive, default=None,
                       help="worker threads for plugin code (default FLOWORK_WORKER_THREADS, "
                            f"4; under --server waitress: its threads, default {DEFAULT_THREADS}); "
                            "keep FLOWORK_DB_POOL_SIZE above this")
    serve.add_argument("--server", choices=SERVERS, default="uvicorn",
                       help="uvicorn (default: REST, proxy and WebSocket) or waitress (WSGI: "
                            "REST and proxy)")
    sub.add_parser("migrate", help="apply pending database migrations (every plugin's)",
                   description="Apply pending database migrations, kernel first, then each "
                               "plugin after the plugins it requires.")
    config = sub.add_parser("config", help="print every effective setting, its source and owner",
                            description="Print every setting of the kernel and the enabled "
                                        "plugins: value (secrets masked), source (default, file, "
                                        "environment) and the plugin that owns it.")
    config.add_argument("--check", action="store_true",
                        help="print nothing but problems; exit 2 on an unknown FLOWORK_* "
                             "variable or TOML key, as on any invalid value")
    plugins = sub.add_parser("plugins", help="list enabled plugins: hooks, models, routes, settings",
                             description="List the enabled plugins with their hooks, models, "
                                         "routes and settings.")
    plugins.add_argument("--all", action="store_true",
                         help="also list the kernel's built-in plugin and installed plugins "
                              "that are not enabled (default: off)")
    sub.add_parser("routes", help="list every route with its principal kind and owner",
                   description="List every route: method, path, principal kind, owning plugin.")
    for command in commands:
        command.configure(sub.add_parser(command.name, help=command.help,
                                         description=command.help))
    return parser


def _entry_point_commands(environ: Mapping[str, str]) -> list[Command]:
    """Commands of the enabled plugins, from the light ``flowork_gateway.commands`` entry
    points; nothing else is imported. If ``FLOWORK_PLUGINS`` cannot be read (a broken
    configuration), the commands of every installed plugin are listed."""
    from importlib.metadata import entry_points

    enabled = _enabled_plugins(environ)
    commands: list[Command] = []
    for entry in sorted(entry_points(group=COMMANDS_ENTRY_POINT_GROUP), key=lambda e: e.name):
        if enabled is not None and entry.name not in enabled:
            continue
        try:
            loaded = entry.load()
            items = list(loaded() if callable(loaded) else loaded)
        except Exception as exc:  # a broken third-party package must not break the CLI
            print(f"flowork-gateway: warning: commands of plugin {entry.name!r} failed to load: "
                  f"{exc!r}", file=sys.stderr)
            continue
        commands.extend(c for c in items if isinstance(c, Command))
    return commands


def _enabled_plugins(environ: Mapping[str, str]) -> list[str] | None:
    """``FLOWORK_PLUGINS`` as configured, or None when the configuration cannot be read."""
    try:
        found, value = Config(environ).raw("FLOWORK_PLUGINS")
        return expand_plugin_names(as_list(value) if found else ["bundled"])
    except (ConfigError, ValueError):
        return None


def _hook_commands(gateway: Gateway) -> list[Command]:
    commands: list[Command] = []
    for items in gateway.hook.gateway_commands():
        commands.extend(items)
    return commands


def _command_word(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word
        if word == "--":
            break
    return None


def listen_error_message(exc: OSError, host: str, port: int) -> str | None:
    """One line for an error binding the listening socket, or None if it is something else.

    For every server ``serve`` can run (waitress here; the ASGI server too)."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: unknown host {host!r} ({exc.strerror or exc})"
    if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
        return (f"cannot listen on {where}: the port is already in use (another gateway or "
                f"program listens there); stop it or choose another --port")
    if exc.errno in (errno.EACCES, getattr(errno, "WSAEACCES", -1)):
        return (f"cannot listen on {where}: permission denied (ports below 1024 need "
                f"privileges; use a higher --port behind a reverse proxy)")
    if exc.errno in (errno.EADDRNOTAVAIL, getattr(errno, "WSAEADDRNOTAVAIL", -1)):
        return f"cannot listen on {where}: {host} is not an address of this machine"
    return None


def database_error_message(exc: BaseException, url: str) -> str | None:
    """One line for a database that cannot be reached or opened, or None if ``exc`` is not
    such an error. Names the host:port (or SQLite file) and the driver's first line; never
    the password."""
    import peewee

    if isinstance(exc, peewee.ImproperlyConfigured):
        return f"database driver missing for {redact(url)}: {_first_line(exc)}; " \
               f"install it with: pip install 'flowork-gateway[postgres]'"
    if not isinstance(exc, peewee.OperationalError | peewee.InterfaceError):
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        return f"cannot open the SQLite database {redact(url)}: {_first_line(exc)}"
    host = parts.hostname or "localhost"
    default_port = 26257 if parts.scheme.startswith(("cockroach", "crdb")) else 5432
    try:
        port: int | str = parts.port or default_port
    except ValueError:  # a malformed port in the URL
        port = "?"
    return f"cannot connect to the database at {host}:{port}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact(lines[0]) if lines else type(exc).__name__


#: Libraries that log every request at INFO: one line (and a locked stderr write) per proxied
#: request, with the engine URL and query string in it. Their warnings still show.
_CHATTY_LOGGERS = ("httpx", "httpcore")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv, os.environ)
    except BrokenPipeError:
        # The reader went away (`flowork-gateway plugins | head`): stop quietly. Point stdout
        # at devnull so the interpreter's final flush does not raise again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str], environ: Mapping[str, str]) -> int:
    commands = _entry_point_commands(environ)
    gateway: Gateway | None = None
    config_error: ConfigError | None = None
    word = _command_word(argv)
    known = {*BUILTIN_COMMANDS, *(c.name for c in commands)}
    if word is not None and word not in known:
        # Perhaps a command from a plugin's gateway_commands hook: those need the plugins.
        gateway, config_error = _try_gateway()
        if gateway is not None:
            commands += [c for c in _hook_commands(gateway) if c.name not in known]
    parser = _build_parser(commands)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            if config_error is not None and exc.code not in (0, None):
                print(f"flowork-gateway: (plugin commands may be missing: configuration error: "
                      f"{config_error})", file=sys.stderr)
            raise
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        _configure_logging()
        command = next((c for c in commands if c.name == args.command), None)
        if command is not None and not command.needs_config:
            return command.run(None, args)
        if gateway is None:
            gateway, config_error = _try_gateway()
        if gateway is None:
            print(f"flowork-gateway: configuration error: {config_error}", file=sys.stderr)
            return EXIT_USAGE
        also_known = [name for c in commands for name in c.environment]
        unknown = gateway.config.unknown_names(also_known)
        if args.command == "config" and args.check:
            for item in unknown:
                print(f"flowork-gateway: {item.message()}", file=sys.stderr)
            return EXIT_USAGE if unknown else 0
        for item in unknown:
            log.warning("%s", item.message())
        return _run(gateway, args, command)
    except ConfigError as exc:
        print(f"flowork-gateway: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        message = database_error_message(exc, gateway.database_url) if gateway else None
        if message is None:
            raise
        print(f"flowork-gateway: {message}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if gateway is not None:
            _close_quietly(gateway)


def _try_gateway() -> tuple[Gateway | None, ConfigError | None]:
    from .app import create_gateway

    try:
        return create_gateway(), None
    except ConfigError as exc:
        return None, exc


def _close_quietly(gateway: Gateway) -> None:
    try:
        gateway.close()
    except Exception:  # closing after a database failure: the failure was reported already
        log.debug("closing the gateway failed", exc_info=True)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _run(gateway: Gateway, args: argparse.Namespace, command: Command | None) -> int:
    if args.command == "serve":
        return _serve(gateway, args)
    if args.command == "migrate":
        applied = gateway.migrate()
        print("\n".join(applied) if applied else "database is up to date")
        return 0
    if args.command == "config":
        _print_config(gateway)
        return 0
    if args.command == "plugins":
        _print_plugins(gateway, show_all=args.all)
        return 0
    if args.command == "routes":
        _print_routes(gateway)
        return 0
    if command is None:
        raise AssertionError(f"unhandled command {args.command}")
    if command.needs_database:
        gateway.migrate()
    token = gateway.activate()
    try:
        return command.run(gateway, args)
    finally:
        from .db import deactivate

        deactivate(token)


def _serve(gateway: Gateway, args: argparse.Namespace) -> int:
    from .observe import configure_logging

    configure_logging(gateway.config["FLOWORK_LOG_FORMAT"], gateway.config["FLOWORK_LOG_LEVEL"])
    try:
        gateway.start_metrics_listener()
    except ConfigError as exc:
        print(f"flowork-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.threads is not None:
        gateway.worker_threads = args.threads
    elif args.server == "waitress":
        gateway.worker_threads = DEFAULT_THREADS
    gateway.migrate()
    if args.server == "waitress":
        return _serve_waitress(gateway, args)
    from .serving import listen, serve_asgi

    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        message = listen_error_message(exc, args.host, args.port)
        if message is None:
            raise
        print(f"flowork-gateway: {message}", file=sys.stderr)
        return EXIT_FAILURE
    gateway.asgi  # noqa: B018 - built (and plugin wrappers applied) before serving
    _freeze_startup_objects()
    # The ASGI lifespan sets gateway.loop and runs the startup hooks (in the worker pool),
    # and the shutdown hooks after the graceful stop.
    return serve_asgi(gateway, sock)


def _freeze_startup_objects() -> None:
    # Everything alive now (modules, plugins, route tables) lives as long as the process:
    # move it out of the cyclic collector's sight, so full collections under load only walk
    # what requests allocate.
    gc.collect()
    gc.freeze()


def _serve_waitress(gateway: Gateway, args: argparse.Namespace) -> int:
    import waitress

    from .api import API_PREFIX

    gateway.server = "waitress"
    gateway.start()
    threads = gateway.worker_threads
    log.info("serving on http://%s:%s%s (waitress, threads=%s)", args.host, args.port,
             API_PREFIX, threads)
    _freeze_startup_objects()
    try:
        server = waitress.create_server(
            gateway, host=args.host, port=args.port, threads=threads,
            **waitress_options(gateway),
        )
    except OSError as exc:
        message = listen_error_message(exc, args.host, args.port)
        if message is None:
            raise
        print(f"flowork-gateway: {message}", file=sys.stderr)
        return EXIT_FAILURE
    drop_stalled_readers(server)
    # No engine URL may point back at this server (a proxy loop): see gateway_kernel.netpolicy.
    from . import netpolicy

    policy = netpolicy.for_gateway(gateway)
    for host, port in listening_addresses(server):
        policy.add_own_address(host, port)
    server.print_listen("Serving on http://{}:{}")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0


def listening_addresses(server: object) -> list[tuple[str, int]]:
    """(host, port) of each socket a waitress server listens on (one or several)."""
    from waitress.server import BaseWSGIServer

    servers = [server] if isinstance(server, BaseWSGIServer) else [
        s for s in getattr(server, "map", {}).values() if isinstance(s, BaseWSGIServer)]
    return [(str(s.effective_host), int(s.effective_port)) for s in servers]


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


def _print_config(gateway: Gateway) -> None:
    config = gateway.config
    rows = [("setting", "value", "source", "owner")]
    for name, _value in config.items():
        shown = config.display(name)
        if name == "DATABASE_URL" and _value is None:
            shown = redact(gateway.database_url)
        rows.append((name, shown, config.source(name) or "-", config.owner(name) or "-"))
    _print_table(rows)
    if config.file:
        print(f"(file: FLOWORK_CONFIG={config.file})")


def _print_table(rows: Iterable[tuple[str, ...]]) -> None:
    rows = list(rows)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def _print_plugins(gateway: Gateway, show_all: bool) -> None:
    from .loader import available_plugins

    for info in gateway.plugin_info(kernel=show_all):
        state = "built in" if info.name not in gateway.plugins else "enabled"
        print(f"{info.name} {info.version} ({state})"
              f"{' - ' + info.description if info.description else ''}")
        if info.requires:
            print(f"  requires: {', '.join(info.requires)}")
        print(f"  hooks:    {', '.join(info.hooks) or '-'}")
        if info.declares:
            print(f"  declares: {', '.join(info.declares)}")
        print(f"  tables:   {', '.join(info.tables) or '-'}")
        print(f"  routes:   {', '.join(info.routes) or '-'}")
        print(f"  settings: {', '.join(info.settings) or '-'}")
    if show_all:
        for name, target in sorted(available_plugins().items()):
            if name not in gateway.plugins:
                print(f"{name} (installed, not enabled) -> {target}")


def _print_routes(gateway: Gateway) -> None:
    import falcon

    from .api import API_PREFIX

    rows = []
    for plugin, route in gateway.routes:
        for method in sorted(falcon.COMBINED_METHODS):
            if method != "OPTIONS" and hasattr(route.resource, f"on_{method.lower()}"):
                rows.append((route.full_path, method, route.auth_for(method), plugin))
    for plugin, sink in gateway.sinks:
        rows.append((API_PREFIX + sink.prefix.rstrip("/") + "/**", "*", sink.auth, plugin))
    width = max((len(r[0]) for r in rows), default=10)
    for path, method, auth, plugin in rows:
        print(f"{method:7} {path:{width}}  {auth:8} {plugin}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
