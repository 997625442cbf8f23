"""proxy: public and authenticated reverse proxies to Core Engines."""

__all__ = ["ProxyPlugin"]


def __getattr__(name: str) -> object:
    # Lazy (PEP 562): other plugins import the published contract (proxy.hookspecs) without
    # loading the proxy itself.
    if name == "ProxyPlugin":
        from .plugin import ProxyPlugin

        return ProxyPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
