"""auth_crypto: the ``user`` principal from Ethereum (EIP-191) signatures."""

__all__ = ["AuthCryptoPlugin"]


def __getattr__(name: str) -> object:
    # Lazy (PEP 562): the package's light modules (its CLI commands) import without the plugin.
    if name == "AuthCryptoPlugin":
        from .plugin import AuthCryptoPlugin

        return AuthCryptoPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
