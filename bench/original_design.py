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

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

DEFAULT_BACKEND = "eth_keys.backends.NativeECCBackend"


def pure_python_recovery(backend_class: str = DEFAULT_BACKEND
                         ) -> Callable[[bytes, tuple[int, int, int]], bytes]:
    """auth_crypto's ``recover_address`` done through the eth_keys backend ``backend_class``
    (by default the pure-Python ``NativeECCBackend``): the original design's recovery."""
    from eth_keys.backends import get_backend
    from eth_keys.datatypes import Signature
    from eth_keys.exceptions import BadSignature, ValidationError

    from gateway_plugins.auth_crypto import verify

    backend = get_backend(backend_class)

    def recover_address(message: bytes, vrs: tuple[int, int, int]) -> bytes:
        try:
            signature = Signature(vrs=vrs, backend=backend)
            public_key = signature.recover_public_key_from_msg_hash(verify.eip191_hash(message))
        except (BadSignature, ValidationError) as exc:
            raise verify.InvalidSignature("signature does not recover to a public key") from exc
        return public_key.to_canonical_address()

    recover_address.backend_name = type(backend).__name__  # type: ignore[attr-defined]
    return recover_address


def _check_targets() -> None:
    from gateway_plugins.auth_crypto import scheme, verify

    for module, name in ((scheme, "recover_address"), (verify, "recover_address")):
        if not hasattr(module, name):
            raise SystemExit(f"original_design: {module.__name__}.{name} is gone; update bench")


@contextlib.contextmanager
def recovery_patched(backend_class: str = DEFAULT_BACKEND) -> Iterator[str]:
    """Within the block auth_crypto recovers through ``backend_class`` (the name of the
    backend's class is yielded); the plugin's own recovery is put back afterwards."""
    from gateway_plugins.auth_crypto import scheme, verify

    _check_targets()
    slow = pure_python_recovery(backend_class)
    saved = scheme.recover_address, verify.recover_address
    scheme.recover_address = verify.recover_address = slow
    try:
        yield slow.backend_name  # type: ignore[attr-defined]
    finally:
        scheme.recover_address, verify.recover_address = saved


def patch_auth_crypto() -> str:
    """Install slow recovery and turn the caches off; return the backend's class name."""
    os.environ.setdefault("ECC_BACKEND_CLASS", DEFAULT_BACKEND)
    os.environ["FLOWORK_AUTH_CACHE"] = "off"
    from gateway_plugins.auth_crypto import scheme, verify

    _check_targets()
    slow = pure_python_recovery(os.environ["ECC_BACKEND_CLASS"])
    scheme.recover_address = verify.recover_address = slow  # for the life of the process
    return slow.backend_name  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = patch_auth_crypto()
    print(f"original design: {name} recovery, no caches", file=sys.stderr, flush=True)
    from gateway_kernel.cli import main as gateway_main

    return gateway_main(["serve", *argv])


if __name__ == "__main__":
    sys.exit(main())
