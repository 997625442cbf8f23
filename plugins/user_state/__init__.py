"""user_state: small per-user GUI state (``/user/state/{key}``)."""

from .plugin import UserStatePlugin

__all__ = ["UserStatePlugin"]
