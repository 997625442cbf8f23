"""A hook a test plugin declares (tests/kernel/test_hookspecs.py)."""

from __future__ import annotations

import pluggy

from gateway_kernel.api import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def flowork_test_ping(word: str) -> str:
    """A test hook: every implementation answers ``word`` in its own way."""
