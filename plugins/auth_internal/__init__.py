"""auth_internal: the ``engine`` (X-Engine-Token) and ``service`` (X-API-Key) principals."""

from .plugin import AuthInternalPlugin

__all__ = ["AuthInternalPlugin"]
