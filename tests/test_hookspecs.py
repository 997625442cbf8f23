"""Every hook is documented, and every hook is implemented by a plugin or exercised by a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from gateway_kernel import hookspecs

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(name for name, fn in vars(hookspecs).items()
               if callable(fn) and name.startswith(("gateway_", "flowork_"))
               and hasattr(fn, "flowork_gateway_spec"))


def sources(*folders: str) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for folder in folders
                     for p in (ROOT / folder).rglob("*.py"))


def test_specs_are_found():
    assert len(SPECS) >= 20
    assert "gateway_routes" in SPECS and "flowork_resolve_engine" in SPECS


@pytest.mark.parametrize("name", SPECS)
def test_hook_is_documented(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc) >= 40, f"hook {name} needs a docstring saying what it is for and when it runs"


@pytest.mark.parametrize("name", SPECS)
def test_hook_is_implemented_or_tested(name):
    implemented = f"def {name}(" in sources("plugins", "examples")
    tested = f"def {name}(" in sources("tests") or f".{name}(" in sources("tests")
    assert implemented or tested, f"hook {name} is neither implemented by a plugin nor tested"
