"""Operations: one access line per request, request ids on every line, JSON logs, and
Prometheus metrics — read from a real ``flowork-gateway serve`` (whichever server
FLOWORK_TEST_SERVER names) and parsed with the Prometheus client's own parser."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway_plugins.auth_crypto.signing import Signer
from tests.support.procs import SERVICE_SECRET, GatewayProcess, free_port


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def json_lines(gw: GatewayProcess) -> list[dict]:
    out = []
    for line in gw.log_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logs = tmp_path_factory.mktemp("observe")
    metrics_port = free_port()
    settings = {"DATABASE_URL": f"sqlite:///{logs / 'gw.db'}", "FLOWORK_LOG_FORMAT": "json",
                "FLOWORK_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
    with GatewayProcess.start(settings, log_dir=logs) as gw:
        yield gw, metrics_port


def test_one_json_access_line_per_request_with_its_request_id(served):
    gw, _ = served
    signer = Signer.new()
    headers = signer.headers()
    r = httpx.post(gw.url("/user/engines"), json={"name": "observed"}, headers=headers)
    assert r.status_code == 201
    request_id = r.headers["x-request-id"]
    engine_id = r.json()["id"]
    r = httpx.get(gw.url(f"/user/engines/{engine_id}/shares"), headers={
        **headers, "X-Request-ID": "client-chosen-id-1"})
    assert r.status_code == 200

    def access_lines():
        return [x for x in json_lines(gw) if x["logger"] == "flowork.access"
                and x["request_id"] in (request_id, "client-chosen-id-1")]

    lines = wait_for(lambda: len(access_lines()) == 2 and access_lines())
    assert lines, gw.log_tail()
    created, listed = sorted(lines, key=lambda x: x["request_id"] != request_id)
    assert created["method"] == "POST" and created["route"] == "/api/v1/user/engines"
    assert created["status"] == 201 and created["bytes"] > 0 and created["duration_ms"] >= 0
    assert created["principal"] == f"user:{signer.address}"
    assert created["client"] == "127.0.0.1"
    # the route template, never the path (paths carry ids and share tokens)
    assert listed["route"] == "/api/v1/user/engines/{engine_id}/shares"
    assert engine_id not in json.dumps(listed)
    # never a credential
    text = gw.log_text()
    assert headers["X-Signature"] not in text and headers["X-Signed-Message"] not in text


def test_request_id_on_other_lines_the_request_causes(served):
    gw, _ = served
    signer = Signer.new()
    bad = {**signer.headers(), "X-Signature": "0x" + "11" * 65}
    r = httpx.get(gw.url("/auth/profile"), headers={**bad, "X-Request-ID": "failing-signin-7"})
    assert r.status_code == 401

    def warnings():
        return [x for x in json_lines(gw) if x["request_id"] == "failing-signin-7"
                and x["logger"] != "flowork.access"]

    lines = wait_for(warnings)
    assert lines, gw.log_tail()
    assert any("authentication failed" in x["message"] for x in lines)
    assert bad["X-Signature"] not in gw.log_text()


def test_metrics_need_the_service_key_and_count_requests(served):
    gw, _ = served
    for _ in range(3):
        assert httpx.get(gw.url("/system/health")).status_code == 200
    assert httpx.get(gw.base + "/metrics").status_code == 401
    r = httpx.get(gw.base + "/metrics", headers={"X-API-Key": SERVICE_SECRET})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found = samples(r.text)
    health = found[("flowork_http_requests_total",
                    (("method", "GET"), ("route", "/api/v1/system/health"), ("status", "200")))]
    assert health >= 3
    assert found[("flowork_http_request_duration_seconds_count",
                  (("method", "GET"), ("route", "/api/v1/system/health")))] >= 3
    assert ("flowork_worker_queue_depth", ()) in found


def test_auth_failures_are_counted_by_scheme_and_code(served):
    gw, _ = served
    r = httpx.get(gw.url("/engine/get-engine-auth-info"),
                  headers={"X-Engine-Token": "dev_engine_" + "a" * 36})
    assert r.status_code == 401

    def counted():
        text = httpx.get(gw.base + "/metrics", headers={"X-API-Key": SERVICE_SECRET}).text
        return {labels: v for (name, labels), v in samples(text).items()
                if name == "flowork_auth_failures_total"}

    failures = wait_for(counted)
    assert any(dict(labels).get("code") == "invalid_engine_token" and v >= 1
               for labels, v in failures.items()), failures


def test_separate_metrics_listener_needs_no_key(served):
    _gw, port = served
    r = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200
    assert any(name == "flowork_http_requests_total" for name, _ in samples(r.text))


def test_text_format_access_line(tmp_path):
    with GatewayProcess.start({"DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}"},
                              log_dir=tmp_path) as gw:
        r = httpx.get(gw.url("/system/health"), headers={"X-Request-ID": "text-line-1"})
        assert r.status_code == 200
        line = wait_for(lambda: next((x for x in gw.log_text().splitlines()
                                      if "[text-line-1]" in x and "flowork.access" in x), None))
        assert line, gw.log_tail()
        assert "route=/api/v1/system/health" in line and "status=200" in line
