"""Contract fuzzing: schemathesis generates requests for every documented operation of the
in-process gateway, each signed with a fresh key (engine and service credentials where the
operation needs them). No server errors, no answers outside the document."""

from __future__ import annotations

import os

import falcon.testing
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway_kernel.testing import SERVICE_SECRET
from gateway_plugins.auth_crypto.signing import Signer

EXAMPLES = int(os.environ.get("FLOWORK_FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def fuzz_target(make_gateway):
    gateway = make_gateway(settings={"FLOWORK_PUBLIC_ENGINE_URL": "http://127.0.0.1:9"})
    client = falcon.testing.TestClient(gateway)
    owner = Signer.new()
    created = client.simulate_post("/api/v1/user/engines", json={"name": "fuzz"},
                                   headers=owner.headers())
    assert created.status_code == 201
    return gateway, created.json["raw_token"]


def auth_headers(operation, engine_token: str) -> dict[str, str]:
    names = {name for req in operation.definition.raw.get("security", []) for name in req}
    if "EngineToken" in names:
        return {"X-Engine-Token": engine_token}
    if "ApiKey" in names:
        return {"X-API-Key": SERVICE_SECRET}
    if "UserSignature" in names:
        return Signer.new().headers()
    return {}


@pytest.mark.no_openapi_check  # schemathesis does the validating here
def test_every_operation_survives_generated_requests(fuzz_target):
    gateway, engine_token = fuzz_target
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", gateway)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case, operation=operation) -> None:  # noqa: ANN001
            headers = {**(case.headers or {}), **auth_headers(operation, engine_token)}
            case.headers = headers
            response = case.call()
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:  # collect, report all operations at once
                failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:600])
                raise

        try:
            run()
        except Exception:  # noqa: S110 - recorded above
            pass
    assert not failures, "\n\n".join(dict.fromkeys(failures))
