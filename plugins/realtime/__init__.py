"""realtime: Socket.IO for Core engines and the GUI (presence, pushes, command relay)."""

from .plugin import RealtimePlugin

__all__ = ["RealtimePlugin"]
