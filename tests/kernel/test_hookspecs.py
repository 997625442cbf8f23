"""Every hook (the kernel's and those plugins declare) is documented, and implemented by a
plugin or exercised by a test; every hook a bundled plugin implements is declared somewhere."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest

from gateway_kernel import GatewayPlugin, PluginError, hookimpl, hookspecs
from gateway_kernel.loader import plugin_hookspecs
from gateway_plugins import BUNDLED
from tests.support import kernel_plugins_hookspecs

ROOT = Path(__file__).resolve().parents[2]


def _spec_modules() -> list[ModuleType]:
    found = [hookspecs]
    for name in BUNDLED:
        try:
            found.append(importlib.import_module(f"gateway_plugins.{name}.hookspecs"))
        except ModuleNotFoundError:
            pass
    return found


MODULES = _spec_modules()
SPECS = sorted((name, module) for module in MODULES for name, fn in vars(module).items()
               if callable(fn) and name.startswith(("gateway_", "flowork_"))
               and hasattr(fn, "flowork_gateway_spec"))
SPEC_IDS = [name for name, _module in SPECS]


def sources(*folders: str) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for folder in folders
                     for p in (ROOT / folder).rglob("*.py"))


def test_specs_are_found():
    names = set(SPEC_IDS)
    assert len(names) == len(SPEC_IDS), "a hook is declared twice"
    assert "gateway_routes" in names and "flowork_resolve_engine" in names
    # The product contract lives with the plugins, not in the kernel.
    assert not [n for n in vars(hookspecs) if n.startswith("flowork_")]


@pytest.mark.parametrize(("name", "module"), SPECS, ids=SPEC_IDS)
def test_hook_is_documented(name, module):
    doc = inspect.getdoc(getattr(module, name)) or ""
    assert len(doc) >= 40, f"hook {name} needs a docstring saying what it is for and when it runs"


@pytest.mark.parametrize(("name", "module"), SPECS, ids=SPEC_IDS)
def test_hook_is_implemented_or_tested(name, module):
    implemented = f"def {name}(" in sources("plugins", "examples")
    tested = f"def {name}(" in sources("tests") or f".{name}(" in sources("tests")
    assert implemented or tested, f"hook {name} is neither implemented by a plugin nor tested"


def test_bundled_plugins_implement_only_declared_hooks(gateway):
    # Implementations of another plugin's hooks are optional (optionalhook=True) and so escape
    # check_pending: with every bundled plugin enabled, each must meet its spec.
    for caller in gateway.pm.get_hookcallers(gateway.plugins["engines"]) or []:
        assert caller.spec is not None, caller.name
    undeclared = [(impl.plugin_name, caller.name)
                  for plugin in gateway.plugins.values()
                  for caller in gateway.pm.get_hookcallers(plugin) or []
                  for impl in caller.get_hookimpls() if caller.spec is None]
    assert undeclared == []


class _Declares(GatewayPlugin):
    name = "declares"
    hookspecs = kernel_plugins_hookspecs

    @hookimpl
    def gateway_routes(self, gateway):
        return []


class _Implements(GatewayPlugin):
    name = "implements"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def flowork_test_ping(self, word: str) -> str:
        self.seen.append(word)
        return word.upper()


class _Misspells(GatewayPlugin):
    name = "misspells"

    @hookimpl
    def flowork_test_pong(self, word: str) -> str:
        return word


def test_plugin_declared_hook_is_called_through_pluggy(make_gateway):
    implements = _Implements()
    gateway = make_gateway(plugins="auth_internal", extra_plugins=[_Declares(), implements])
    assert gateway.hook.flowork_test_ping(word="hi") == ["HI"]
    assert implements.seen == ["hi"]


def test_misspelt_implementation_of_a_plugin_hook_is_refused(make_gateway):
    with pytest.raises(PluginError, match=r"misspells.*flowork_test_pong"):
        make_gateway(plugins="auth_internal", extra_plugins=[_Declares(), _Misspells()])


def test_implementation_without_its_declaring_plugin_is_refused(make_gateway):
    # The declaring plugin is not enabled, so the hook is unknown: loud, unless optional.
    with pytest.raises(PluginError, match=r"implements.*flowork_test_ping"):
        make_gateway(plugins="auth_internal", extra_plugins=[_Implements()])


def test_hookspecs_found_by_package_convention():
    # The bundled proxy sets no attribute: its package's hookspecs module is found.
    from gateway_plugins.proxy import ProxyPlugin
    from gateway_plugins.proxy import hookspecs as proxy_specs

    assert ProxyPlugin.hookspecs is None
    assert plugin_hookspecs(ProxyPlugin()) is proxy_specs
    assert plugin_hookspecs(_Implements()) is None  # tests.kernel has no hookspecs module


class _AlsoDeclares(_Declares):
    name = "also_declares"


def test_two_plugins_naming_one_hookspecs_module(make_gateway):
    implements = _Implements()
    gateway = make_gateway(plugins="auth_internal",
                           extra_plugins=[_Declares(), _AlsoDeclares(), implements])
    assert gateway.hook.flowork_test_ping(word="x") == ["X"]
