"""Suite-wide: every response from a documented route is validated against the OpenAPI doc."""

from __future__ import annotations

import falcon.testing
import pytest

from gateway_kernel.app import Gateway
from gateway_kernel.testing import served_app


@pytest.fixture(autouse=True)
def _serve_gateways_as_configured(monkeypatch):
    """``TestClient(gateway)`` anywhere in the suite drives the app FLOWORK_TEST_SERVER picks
    (ASGI by default, WSGI under ``waitress``); ``client.gateway`` keeps the gateway."""
    original = falcon.testing.TestClient.__init__

    def init(self, app, *args, **kwargs):
        if isinstance(app, Gateway):
            self.gateway = app
            app = served_app(app)
        original(self, app, *args, **kwargs)

    monkeypatch.setattr(falcon.testing.TestClient, "__init__", init)

    # falcon.testing always adds its own Host header to an ASGI scope, after the test's: a
    # real client sends one. Pass the test's Host as the simulated host instead.
    original_simulate = falcon.testing.TestClient.simulate_request

    def simulate_request(self, *args, **kwargs):
        headers = kwargs.get("headers")
        if headers and "host" not in kwargs and not isinstance(self.app, Gateway):
            host = [k for k in headers if k.lower() == "host"]
            if host:
                kwargs["headers"] = {k: v for k, v in headers.items() if k not in host}
                kwargs["host"] = headers[host[0]]
        return original_simulate(self, *args, **kwargs)

    monkeypatch.setattr(falcon.testing.TestClient, "simulate_request", simulate_request)


@pytest.fixture(autouse=True)
def _validate_responses_against_openapi(openapi_check):
    """The testing kit's ``openapi_check`` for every test (``no_openapi_check`` opts out)."""


@pytest.fixture
def upstream():
    """A real loopback engine (tests/support/upstreams.py) for proxy tests."""
    from tests.support.upstreams import Upstream

    with Upstream() as server:
        yield server


@pytest.fixture
def auth(signer):
    """One legacy signature, reused for every request of a test as the GUI does."""
    return signer.headers()
