"""engines: engines and tokens, heartbeats and presence, the dashboard claim flow.

Other plugins import only :mod:`gateway_plugins.engines.api`, its public API.
"""

__all__ = ["EnginesPlugin"]


def __getattr__(name: str) -> object:
    # Lazy (PEP 562): importing the public API (engines.api) does not load the plugin class.
    if name == "EnginesPlugin":
        from .plugin import EnginesPlugin

        return EnginesPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
