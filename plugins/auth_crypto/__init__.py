"""auth_crypto: the ``user`` principal from Ethereum (EIP-191) signatures."""

from .plugin import AuthCryptoPlugin

__all__ = ["AuthCryptoPlugin"]
