"""sharing: engine shares and workflow share links."""

from .plugin import SharingPlugin

__all__ = ["SharingPlugin"]
