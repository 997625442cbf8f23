"""Serve the gateway the way the original design authenticated users: every request recovers
its signer in pure Python and nothing is cached. The baseline of the "speed-up" rows.

    ECC_BACKEND_CLASS=eth_keys.backends.NativeECCBackend \\
        .venv/bin/python bench/original_design.py --port 8200 [--threads 8]

auth_crypto has no switch for either (see docs/PERFORMANCE.md), so this launcher swaps two
of its module attributes before the ordinary ``flowork-gateway serve`` runs:

- ``recover_address``: recovery through the eth_keys backend named by ``ECC_BACKEND_CLASS``
  (default here: the pure-Python ``NativeECCBackend``), passed explicitly;
- ``ExpiringCache``: a cache that never keeps anything, so neither verified signatures nor
  accounts are remembered (one account query per request, like the original).

It fails loudly if the plugin no longer has what it patches.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Hashable
from typing import Any

DEFAULT_BACKEND = "eth_keys.backends.NativeECCBackend"


class NoCache:
    """Drop-in for auth_crypto's ExpiringCache that remembers nothing."""

    def __init__(self, max_entries: int = 0) -> None:
        self.max_entries = max_entries

    def get(self, key: Hashable, now: float) -> Any:
        return None

    def put(self, key: Hashable, value: Any, expires: float) -> None:
        return None

    def discard(self, key: Hashable) -> None:
        return None

    def clear(self) -> None:
        return None

    def __len__(self) -> int:
        return 0


def patch_auth_crypto() -> str:
    """Install slow recovery and no caches; return the backend's class name."""
    os.environ.setdefault("ECC_BACKEND_CLASS", DEFAULT_BACKEND)
    from eth_keys.backends import get_backend
    from eth_keys.datatypes import Signature
    from eth_keys.exceptions import BadSignature, ValidationError

    from gateway_plugins.auth_crypto import plugin, verify

    backend = get_backend(os.environ["ECC_BACKEND_CLASS"])

    def recover_address(message: bytes, vrs: tuple[int, int, int]) -> bytes:
        try:
            signature = Signature(vrs=vrs, backend=backend)
            public_key = signature.recover_public_key_from_msg_hash(verify.eip191_hash(message))
        except (BadSignature, ValidationError) as exc:
            raise verify.InvalidSignature("signature does not recover to a public key") from exc
        return public_key.to_canonical_address()

    for module, name in ((plugin, "recover_address"), (verify, "recover_address"),
                         (plugin, "ExpiringCache")):
        if not hasattr(module, name):
            raise SystemExit(f"original_design: {module.__name__}.{name} is gone; update bench")
    plugin.recover_address = recover_address
    verify.recover_address = recover_address
    plugin.ExpiringCache = NoCache
    return type(backend).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = patch_auth_crypto()
    print(f"original design: {name} recovery, no caches", file=sys.stderr, flush=True)
    from gateway_kernel.cli import main as gateway_main

    return gateway_main(["serve", *argv])


if __name__ == "__main__":
    sys.exit(main())
