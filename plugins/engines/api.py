"""The engines plugin's public API, for plugins that declare ``requires = ("engines",)``.

This module is what another plugin may import from ``gateway_plugins.engines``; everything
else in the package is internal and changes without notice. (Beyond it, engines talks to other
plugins through the hooks its :mod:`.hookspecs` declares.)

- :class:`Engine`: the engines table, to reference by foreign key
  (``ForeignKeyField(Engine, on_delete="CASCADE")``: deleting an engine removes your rows) and
  to read or join on (``id``, ``owner``, ``name``, ``last_seen``). Only engines writes it.
- :func:`presence`: engines' online rule with engines' own configured window
  (``FLOWORK_ENGINE_ONLINE_S``, which stays engines' setting: do not read it): a
  :class:`Presence` with ``engine_json(engine)``, the API.md engine shape
  ``{"id","name","status","last_seen"}``, and ``status_of(row)``, the :class:`EngineStatus`
  of a row that selects :data:`STATUS_COLUMNS` in that order.
- :class:`EngineGuest`, :class:`EngineStatus`: the types of engines' hooks.
- :data:`ENGINE_OFFLINE`: the code of "no online engine" (the proxy contract's), for answers
  on other transports (realtime's socket errors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ENGINE_OFFLINE
from .hookspecs import EngineGuest, EngineStatus
from .models import Engine
from .presence import STATUS_COLUMNS, Presence

if TYPE_CHECKING:
    from gateway_kernel import Gateway

__all__ = ["ENGINE_OFFLINE", "STATUS_COLUMNS", "Engine", "EngineGuest", "EngineStatus", "Presence",
           "presence"]


def presence(gateway: Gateway) -> Presence:
    """The online rule of ``gateway``'s engines plugin. Safe to call from any hook, even
    before engines' ``gateway_configure``: the window is filled in there, before any request."""
    plugin = gateway.plugins.get("engines")
    if plugin is None:
        raise RuntimeError("the engines plugin is not enabled (list it in your plugin's requires)")
    return plugin.presence
