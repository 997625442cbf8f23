"""Every bundled plugin follows the folder layout of docs/writing-plugins.md §1a.

Checked from the source (ast), so a new module that breaks the layout fails here, not in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway_plugins import BUNDLED

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
#: What another plugin may import of a plugin: its published API and its hook contract.
PUBLISHED = {"api", "hookspecs"}


def modules(name: str) -> dict[str, ast.Module]:
    folder = PLUGINS_DIR / name
    return {str(path.relative_to(folder)): ast.parse(path.read_text(), str(path))
            for path in sorted(folder.rglob("*.py"))}


def calls_named(tree: ast.AST, name: str) -> bool:
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
               and node.func.id == name for node in ast.walk(tree))


@pytest.mark.parametrize("name", BUNDLED)
def test_plugin_py_holds_only_the_plugin_class(name):
    tree = modules(name)["plugin.py"]
    defined = [node for node in tree.body
               if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    assert [type(node).__name__ for node in defined] == ["ClassDef"], (
        f"{name}/plugin.py: only the GatewayPlugin subclass belongs there")
    assigned = [node for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                and ast.unparse(node).split("=")[0].strip() != "log"]  # its logger may stay
    assert not assigned, f"{name}/plugin.py: module-level constants belong in their own module"


@pytest.mark.parametrize("name", BUNDLED)
def test_settings_are_declared_in_settings_py(name):
    for module, tree in modules(name).items():
        if module != "settings.py":
            assert not calls_named(tree, "Setting"), f"{name}/{module} declares a Setting"


@pytest.mark.parametrize("name", BUNDLED)
def test_openapi_part_is_in_spec_py(name):
    for module, tree in modules(name).items():
        imports_openapi = any(
            isinstance(node, ast.ImportFrom) and node.module == "gateway_kernel.openapi"
            for node in ast.walk(tree))
        if module != "spec.py":
            assert not imports_openapi, f"{name}/{module} builds OpenAPI outside spec.py"


@pytest.mark.parametrize("name", BUNDLED)
def test_other_plugins_are_reached_only_through_their_published_modules(name):
    for module, tree in modules(name).items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            parts = node.module.split(".")
            if parts[0] != "gateway_plugins" or len(parts) < 2 or parts[1] == name:
                continue
            # ``from gateway_plugins.proxy import hookspecs`` or ``….engines.api import X``
            reached = parts[2] if len(parts) > 2 else None
            names = {alias.name for alias in node.names}
            assert reached in PUBLISHED or (reached is None and names <= PUBLISHED), (
                f"{name}/{module} imports {node.module} ({', '.join(sorted(names))}): only a "
                f"plugin's {' or '.join(sorted(PUBLISHED))} module is published")


@pytest.mark.parametrize("name", BUNDLED)
def test_error_codes_are_constants_in_errors_py(name):
    """A GatewayError is built in errors.py (with its code constant), nowhere else."""
    for module, tree in modules(name).items():
        if module == "errors.py":
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "GatewayError" and len(node.args) >= 2):
                code = node.args[1]
                assert not (isinstance(code, ast.Constant) and isinstance(code.value, str)), (
                    f"{name}/{module}:{node.lineno} spells the error code {code.value!r}")
            for keyword in getattr(node, "keywords", []) if isinstance(node, ast.Call) else []:
                if keyword.arg == "code":
                    assert not (isinstance(keyword.value, ast.Constant)
                                and isinstance(keyword.value.value, str)), (
                        f"{name}/{module}:{node.lineno} spells the error code "
                        f"{keyword.value.value!r}")
