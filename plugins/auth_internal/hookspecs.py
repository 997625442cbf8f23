"""Hooks auth_internal calls: who owns an engine token.

The engine-token scheme authenticates ``X-Engine-Token`` but does not own the engines table:
it asks through :func:`flowork_engine_by_token_digest`, which the engines plugin answers.
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
def flowork_engine_by_token_digest(digest: str) -> EngineIdentity | None:
    """*firstresult*. The engine whose token has this hex SHA-256 digest, or None.
    Must be an indexed lookup (O(1) in the number of engines)."""
