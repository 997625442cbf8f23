"""The server's outer bound on request bodies (waitress refuses a body reaching its limit)."""

from __future__ import annotations

from gateway_kernel.cli import waitress_options

GIB = 1024**3
MIB = 1024**2


def test_without_the_proxy_waitress_admits_only_json_bodies(make_gateway):
    # Waitress spools a body before anything authenticates it: without a plugin needing
    # uploads, nothing larger than a JSON body is ever accepted (+ 1: waitress refuses a body
    # whose size reaches max_request_body_size).
    gateway = make_gateway(plugins="none")
    assert gateway.request_body_limit == gateway.max_body == MIB
    assert waitress_options(gateway)["max_request_body_size"] == MIB + 1


def test_the_proxy_raises_the_bound_to_its_upload_limit(make_gateway):
    gateway = make_gateway(plugins="bundled")
    assert waitress_options(gateway)["max_request_body_size"] == GIB + 1


def test_plugins_raise_the_bound_and_json_limits_never_lower_it(make_gateway):
    gateway = make_gateway(plugins="none", settings={"FLOWORK_MAX_BODY_BYTES": str(2 * GIB)})
    assert gateway.request_body_limit == 2 * GIB
    gateway.allow_request_body(5 * GIB)
    gateway.allow_request_body(GIB)  # never lowered
    assert waitress_options(gateway)["max_request_body_size"] == 5 * GIB + 1
    assert "max_request_body_size" not in waitress_options()
