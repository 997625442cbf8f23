"""Hooks auth_internal calls: whose engine token was presented.

The engine-token scheme authenticates ``X-Engine-Token`` but neither issues engine tokens nor
owns the engines table, and does not know the token format: it hands the presented token to
:func:`flowork_engine_by_token`, which the engines plugin answers (format and checksum first,
then one indexed lookup).
"""

from __future__ import annotations

from typing import NamedTuple

import pluggy

from gateway_kernel.api import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)


class EngineIdentity(NamedTuple):
    """An engine as seen by the engine-token scheme."""

    engine_id: str
    owner_account_id: int


@hookspec(firstresult=True)
def flowork_engine_by_token(token: str) -> EngineIdentity | None:
    """*firstresult*. The engine whose token ``token`` is (the header's value as sent, any
    length or content), or None. A malformed or made-up token must be refused without a
    database query (a checksum, say); a well-formed one costs one indexed lookup (O(1) in the
    number of engines) of the token's digest, never of the plaintext. None is answered as 401
    ``invalid_engine_token``."""
