"""engines: engines and tokens, presence, the dashboard claim flow, kill switch, user state."""

from .plugin import EnginesPlugin

__all__ = ["EnginesPlugin"]
