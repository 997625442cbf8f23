"""Suite-wide: every response from a documented route is validated against the OpenAPI doc."""

from __future__ import annotations

import falcon.testing
import pytest
from openapi_check import check

from gateway_kernel.app import Gateway


@pytest.fixture(autouse=True)
def _validate_responses_against_openapi(monkeypatch, request):
    if request.node.get_closest_marker("no_openapi_check"):
        yield
        return
    original = falcon.testing.TestClient.simulate_request

    def simulate_request(self, method="GET", path="/", *args, **kwargs):
        result = original(self, method, path, *args, **kwargs)
        if isinstance(self.app, Gateway) and not kwargs.get("_stream_result"):
            check(self.app, method.upper(), path, result.status_code,
                  result.headers.get("content-type", ""), result.content)
        return result

    monkeypatch.setattr(falcon.testing.TestClient, "simulate_request", simulate_request)
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "no_openapi_check: skip response validation")


@pytest.fixture
def upstream():
    """A real loopback engine (tests/upstreams.py) for proxy tests."""
    from upstreams import Upstream

    with Upstream() as server:
        yield server


@pytest.fixture
def auth(signer):
    """One legacy signature, reused for every request of a test as the GUI does."""
    return signer.headers()
