"""Hooks the killswitch plugin calls: it announces changes to whoever pushes them to engines
(the realtime plugin answers, with ``optionalhook=True``, so either can be disabled)."""

from __future__ import annotations

import pluggy

from gateway_kernel.api import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def flowork_kill_switch_changed(component_id: str, disabled: bool) -> None:
    """Event, after commit: a component was disabled (``disabled``) or enabled again through
    the kill switch's routes. Realtime tells every connected engine to sync. Must not block."""
