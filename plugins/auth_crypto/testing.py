"""pytest fixtures for signed requests (loaded through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .signing import Signer


@pytest.fixture
def make_signer() -> Callable[[], Signer]:
    """Factory of fresh random users: ``alice = make_signer(); alice.headers()``."""
    return Signer.new


@pytest.fixture
def signer() -> Signer:
    """One fresh random user."""
    return Signer.new()
