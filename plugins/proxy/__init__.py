"""proxy: public and authenticated reverse proxies to Core Engines."""

from .plugin import ProxyPlugin

__all__ = ["ProxyPlugin"]
