"""engines: engines and tokens, presence, the dashboard claim flow, kill switch, user state."""

__all__ = ["EnginesPlugin"]


def __getattr__(name: str) -> object:
    # Lazy (PEP 562): the package's light modules (its CLI commands) import without the plugin.
    if name == "EnginesPlugin":
        from .plugin import EnginesPlugin

        return EnginesPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
