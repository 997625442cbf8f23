"""Serve the gateway the way the original design authenticated users: every request recovers
its signer in pure Python and nothing is cached. The baseline of the "speed-up" rows.

    ECC_BACKEND_CLASS=eth_keys.backends.NativeECCBackend \\
        .venv/bin/python bench/original_design.py --port 8200 [--threads 8]

Before the ordinary ``flowork-gateway serve`` runs, this launcher

- sets ``FLOWORK_AUTH_CACHE=off`` (auth_crypto's own setting): neither verified signatures
  nor accounts are remembered (one account query per request, like the original);
- swaps auth_crypto's ``recover_address`` for recovery through the eth_keys backend named by
  ``ECC_BACKEND_CLASS`` (default here: the pure-Python ``NativeECCBackend``). The plugin
  always recovers with coincurve, whatever that variable says, so this one patch remains.

It fails loudly if the plugin no longer has what it patches.
"""

from __future__ import annotations

import os
import sys

DEFAULT_BACKEND = "eth_keys.backends.NativeECCBackend"


def patch_auth_crypto() -> str:
    """Install slow recovery and turn the caches off; return the backend's class name."""
    os.environ.setdefault("ECC_BACKEND_CLASS", DEFAULT_BACKEND)
    os.environ["FLOWORK_AUTH_CACHE"] = "off"
    from eth_keys.backends import get_backend
    from eth_keys.datatypes import Signature
    from eth_keys.exceptions import BadSignature, ValidationError

    from gateway_plugins.auth_crypto import scheme, verify

    backend = get_backend(os.environ["ECC_BACKEND_CLASS"])

    def recover_address(message: bytes, vrs: tuple[int, int, int]) -> bytes:
        try:
            signature = Signature(vrs=vrs, backend=backend)
            public_key = signature.recover_public_key_from_msg_hash(verify.eip191_hash(message))
        except (BadSignature, ValidationError) as exc:
            raise verify.InvalidSignature("signature does not recover to a public key") from exc
        return public_key.to_canonical_address()

    for module, name in ((scheme, "recover_address"), (verify, "recover_address")):
        if not hasattr(module, name):
            raise SystemExit(f"original_design: {module.__name__}.{name} is gone; update bench")
    scheme.recover_address = recover_address
    verify.recover_address = recover_address
    return type(backend).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = patch_auth_crypto()
    print(f"original design: {name} recovery, no caches", file=sys.stderr, flush=True)
    from gateway_kernel.cli import main as gateway_main

    return gateway_main(["serve", *argv])


if __name__ == "__main__":
    sys.exit(main())
