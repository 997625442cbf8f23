"""Plugin loading: entry points, names, requirements, declared hooks and table ownership.

Everything here runs once, while a gateway is built, and refuses loudly: a plugin that cannot
be imported, is misnamed, misses a required plugin, implements a hook nobody declares or
claims another plugin's table stops the start-up with a message naming the culprit(s).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .accounts import KERNEL_MIGRATIONS, Account
from .api import KERNEL, PROJECT, GatewayPlugin
from .config import Config, ConfigError, expand_plugin_names
from .db import MigrationRecord

if TYPE_CHECKING:
    from .app import Gateway
    from .db import Migration

ENTRY_POINT_GROUP = "flowork_gateway.plugins"

_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,49}")


class PluginError(ConfigError):
    """A plugin is missing, broken, misdeclared, or clashes with another."""


@dataclass
class PluginInfo:
    name: str
    version: str
    description: str
    requires: tuple[str, ...]
    hooks: list[str] = field(default_factory=list)
    #: Hooks this plugin declares for others (its hookspecs module).
    declares: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        """The tables of this plugin's models (the former name of ``tables``)."""
        return self.tables


def available_plugins() -> dict[str, str]:
    """Every installed plugin entry point: name → 'module:attr'."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def plugin_hookspecs(plugin: GatewayPlugin) -> ModuleType | None:
    """The module of hooks ``plugin`` declares: its ``hookspecs`` attribute, else its
    package's ``hookspecs`` module if there is one."""
    declared = getattr(plugin, "hookspecs", None)
    if declared is not None:
        if not isinstance(declared, ModuleType):
            raise PluginError(f"plugin {plugin.name!r}: 'hookspecs' must be a module")
        return declared
    package = type(plugin).__module__.rpartition(".")[0]
    if not package:
        return None
    try:
        found = importlib.util.find_spec(f"{package}.hookspecs")
    except ImportError:
        return None
    return importlib.import_module(f"{package}.hookspecs") if found is not None else None


def declared_hooks(specs: ModuleType | None) -> list[str]:
    """The names of the hooks a hookspecs module declares."""
    if specs is None:
        return []
    return sorted(n for n, f in vars(specs).items() if hasattr(f, f"{PROJECT}_spec"))


def load_plugins(names: Sequence[str]) -> list[GatewayPlugin]:
    """Instantiate the named plugins through stevedore, loudly."""
    if not names:
        return []
    from stevedore import named
    from stevedore.exception import NoMatches

    failures: list[str] = []

    def on_failure(_manager: Any, entrypoint: Any, exc: BaseException) -> None:
        failures.append(f"plugin {entrypoint.name!r} failed to load: {exc!r}")

    try:
        manager = named.NamedExtensionManager(
            ENTRY_POINT_GROUP,
            names=list(names),
            invoke_on_load=True,
            name_order=True,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=lambda missing: failures.append(
                "plugin(s) not installed: "
                + ", ".join(sorted(missing))
                + f" (installed: {', '.join(sorted(available_plugins())) or 'none'})"
            ),
        )
    except NoMatches:
        manager = None
    if failures:
        raise PluginError("; ".join(failures))
    return [ext.obj for ext in manager] if manager else []


def enabled_plugins(config: Config, extra_plugins: Sequence[GatewayPlugin] = ()) -> list[GatewayPlugin]:
    """The plugins ``FLOWORK_PLUGINS`` names (bundles expanded), loaded from their entry
    points, followed by ``extra_plugins`` (objects: tests, embedding). An entry point must
    load a plugin of its own name."""
    extra_names = {p.name for p in extra_plugins}
    names = [n for n in expand_plugin_names(config["FLOWORK_PLUGINS"]) if n not in extra_names]
    plugins = load_plugins(names)
    for plugin, name in zip(plugins, names, strict=True):
        if plugin.name != name:
            raise PluginError(f"entry point {name!r} loads a plugin named {plugin.name!r}")
    return [*plugins, *extra_plugins]


def check_plugin(plugin: object) -> None:
    """A plugin object has a well-formed name and the attributes the kernel reads."""
    name = getattr(plugin, "name", "")
    if not isinstance(name, str) or not name:
        raise PluginError(f"plugin object {plugin!r} has no 'name' attribute")
    if not _PLUGIN_NAME.fullmatch(name):
        raise PluginError(
            f"plugin {name!r} ({type(plugin).__module__}.{type(plugin).__qualname__}): a "
            f"plugin name is lowercase letters, digits and '_', starting with a letter, at "
            f"most 50 characters (it keys settings, migrations and routes)"
        )
    for attr in ("version", "requires", "settings"):
        if not hasattr(plugin, attr):
            raise PluginError(f"plugin {name!r} lacks the {attr!r} attribute")
    if name == KERNEL:
        raise PluginError(f"{KERNEL!r} is reserved")


def check_requirements(plugins: Mapping[str, GatewayPlugin]) -> None:
    """Every plugin a plugin ``requires`` is enabled too."""
    for plugin in plugins.values():
        for required in plugin.requires:
            if required not in plugins:
                raise PluginError(
                    f"plugin {plugin.name!r} requires plugin {required!r}, which is not "
                    f"enabled (add it to FLOWORK_PLUGINS)"
                )


def check_tables(models_by_plugin: Iterable[tuple[str, Iterable[Any]]]) -> dict[str, str]:
    """Table name → owner (a plugin's name; ``kernel`` for the kernel's own: the accounts and
    the migration history), refusing a model on a table that the kernel or an earlier plugin
    already owns."""
    owners = {model._meta.table_name: KERNEL for model in (Account, MigrationRecord)}
    for plugin, models in models_by_plugin:
        for model in models:
            table = model._meta.table_name
            owner = owners.setdefault(table, plugin)
            if owner != plugin:
                held = "the kernel" if owner == KERNEL else f"plugin {owner!r}"
                raise PluginError(
                    f"table clash: plugin {plugin!r} declares model {model.__name__} on "
                    f"table {table!r}, which {held} owns (prefix tables with the plugin "
                    f"name)"
                )
    return owners


def plugin_manager(kernel_plugin: GatewayPlugin,
                   plugins: Mapping[str, GatewayPlugin]) -> pluggy.PluginManager:
    """A plugin manager with the kernel's hooks and every plugin's own (added before any
    plugin registers, so that registering validates each implementation), the kernel's own
    plugin first, then ``plugins`` in load order."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    added: set[ModuleType] = {hookspecs}
    for plugin in plugins.values():
        specs = plugin_hookspecs(plugin)
        if specs is not None and specs not in added:  # two plugins of one package
            added.add(specs)
            pm.add_hookspecs(specs)
    # pluggy calls the last registered plugin first: registering in reverse load order
    # makes every hook run in load order (gateway_kernel.hookspecs, "Call order").
    for plugin in reversed([kernel_plugin, *plugins.values()]):
        pm.register(plugin, name=plugin.name)
    return pm


def check_pending(pm: pluggy.PluginManager) -> None:
    """Every hook implementation matches a declared hook (a misspelling fails here)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = getattr(exc.plugin, "name", exc.plugin)
        raise PluginError(f"plugin {name!r}: {exc}") from None


def callers_by_plugin(pm: pluggy.PluginManager, hook_name: str) -> list[tuple[str, Any]]:
    """(plugin name, a pluggy caller of ``hook_name`` limited to that plugin), in call
    order: for hooks where each answer is kept apart or feeds the next call."""
    caller = getattr(pm.hook, hook_name)
    callers = []
    # get_hookimpls() lists implementations in reverse call order.
    for impl in reversed(caller.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        others = [p for name, p in pm.list_name_plugin() if name != impl.plugin_name]
        callers.append((impl.plugin_name, pm.subset_hook_caller(hook_name, others)))
    return callers


def per_plugin(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call one hook through pluggy plugin by plugin, in pluggy's (the documented) order,
    keeping who answered what: [(plugin name, its non-None answer)]."""
    caller = getattr(pm.hook, hook_name)
    firstresult = bool(caller.spec and caller.spec.opts.get("firstresult"))
    results = []
    for plugin, call in callers_by_plugin(pm, hook_name):
        answer = call(**kwargs)
        for value in ([answer] if firstresult else answer):
            if value is not None:
                results.append((plugin, value))
    return results


def migration_plan(plugins: Mapping[str, GatewayPlugin],
                   by_plugin: Mapping[str, Iterable[Migration]]) -> list[tuple[str, list[Migration]]]:
    """(owner, migrations) in the order they are applied: the kernel's first, then each
    plugin after the plugins it requires (a requirement cycle is refused)."""
    plan: list[tuple[str, list[Migration]]] = [(KERNEL, list(KERNEL_MIGRATIONS))]
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in done:
            return
        if name in stack:
            raise PluginError(f"plugin requirement cycle: {' -> '.join((*stack, name))}")
        for required in plugins[name].requires:
            visit(required, (*stack, name))
        done.add(name)
        if name in by_plugin:
            plan.append((name, list(by_plugin[name])))

    for name in plugins:
        visit(name)
    return plan


def describe(gateway: Gateway, plugin: GatewayPlugin) -> PluginInfo:
    """What ``plugin`` adds to ``gateway``: hooks, declared hooks, tables, routes, settings."""
    return PluginInfo(
        name=plugin.name,
        version=str(plugin.version),
        description=getattr(plugin, "description", ""),
        requires=tuple(plugin.requires),
        hooks=sorted(c.name for c in gateway.pm.get_hookcallers(plugin) or []),
        declares=declared_hooks(plugin_hookspecs(plugin)),
        tables=sorted(t for t, o in gateway.table_owners.items() if o == plugin.name),
        routes=[r.full_path for o, r in gateway.routes if o == plugin.name],
        settings=[s.name for s in plugin.settings],
    )
