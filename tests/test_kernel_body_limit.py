"""The server's outer bound on request bodies (waitress refuses a body reaching its limit)."""

from __future__ import annotations

from gateway_kernel.app import DEFAULT_REQUEST_BODY_LIMIT
from gateway_kernel.cli import waitress_options

GIB = 1024**3


def test_serve_admits_a_body_of_exactly_the_limit(make_gateway):
    gateway = make_gateway(plugins="none")
    assert gateway.request_body_limit == DEFAULT_REQUEST_BODY_LIMIT == GIB
    # waitress answers 413 when content_length >= max_request_body_size
    assert waitress_options(gateway)["max_request_body_size"] == GIB + 1


def test_plugins_raise_the_bound_and_json_limits_never_lower_it(make_gateway):
    gateway = make_gateway(plugins="none", settings={"FLOWORK_MAX_BODY_BYTES": str(2 * GIB)})
    assert gateway.request_body_limit == 2 * GIB
    gateway.allow_request_body(5 * GIB)
    gateway.allow_request_body(GIB)  # never lowered
    assert waitress_options(gateway)["max_request_body_size"] == 5 * GIB + 1
    assert "max_request_body_size" not in waitress_options()
