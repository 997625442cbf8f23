"""killswitch: component ids that engines must not run (``/system/disabled-components``)."""

__all__ = ["KillSwitchPlugin"]


def __getattr__(name: str) -> object:
    # Lazy (PEP 562): the package's light modules (its CLI commands) import without the plugin.
    if name == "KillSwitchPlugin":
        from .plugin import KillSwitchPlugin

        return KillSwitchPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
