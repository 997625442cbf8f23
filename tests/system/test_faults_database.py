"""Database faults: a private PostgreSQL instance is crashed under load and brought back.

A real ``flowork-gateway serve`` (threads=4, pool of 4) runs on a PostgreSQL server that this
test starts in a temporary directory on its own port (never the machine's shared server).
Client threads create and list engines the whole time. While the database is down, every
answer is the 503 envelope (``database_unavailable``, with Retry-After) and health says
unhealthy; never a 500. When the database is back the gateway recovers by itself, without a
restart; every engine whose creation was answered 201 is still there; and the number of
server connections (pg_stat_activity) never exceeds the pool size.

Runs with the other PostgreSQL tests (FLOWORK_TEST_POSTGRES_URL set) when the PostgreSQL
server binaries are installed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from gateway_kernel.testing import postgres_admin_url
from gateway_plugins.auth_crypto.signing import Signer
from tests.support.pgprivate import PrivatePostgres, find_pg_bin
from tests.support.procs import GatewayProcess

pytestmark = pytest.mark.postgres
POOL_SIZE = 4
THREADS = 4
CLIENTS = 6


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    if not postgres_admin_url():
        pytest.skip("PostgreSQL tests need FLOWORK_TEST_POSTGRES_URL")
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    pg = PrivatePostgres.create()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


@dataclass
class Outcome:
    started: float
    kind: str
    status: int
    code: str | None
    retry_after: str | None


@dataclass
class Load:
    """Client threads creating and listing engines until stopped."""

    gateway: GatewayProcess
    outcomes: list[Outcome] = field(default_factory=list)
    created: dict[str, list[str]] = field(default_factory=dict)  # address -> engine ids (201)
    signers: list[Signer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self, signer: Signer) -> None:
        headers = signer.headers(timestamp=int(time.time()) + 10)
        n = 0
        with httpx.Client(timeout=15) as http:
            while not self.stop.is_set():
                n += 1
                for kind in ("create", "list"):
                    started = time.monotonic()
                    try:
                        if kind == "create":
                            r = http.post(self.gateway.url("/user/engines"),
                                          json={"name": f"engine {n}"}, headers=headers)
                        else:
                            r = http.get(self.gateway.url("/user/engines"), headers=headers)
                    except httpx.HTTPError as exc:  # the gateway itself must never drop us
                        raise AssertionError(f"{kind}: transport error {exc!r}") from exc
                    body = r.json()
                    code = body.get("code") if isinstance(body, dict) else None
                    with self.lock:
                        self.outcomes.append(Outcome(started, kind, r.status_code, code,
                                                     r.headers.get("retry-after")))
                        if kind == "create" and r.status_code == 201:
                            self.created.setdefault(signer.address, []).append(body["id"])
                time.sleep(0.01)

    def run(self) -> list[threading.Thread]:
        self.signers = [Signer.new() for _ in range(CLIENTS)]
        threads = [threading.Thread(target=self.worker, args=(s,), daemon=True)
                   for s in self.signers]
        for thread in threads:
            thread.start()
        return threads


def sample_connections(pg: PrivatePostgres, database: str, samples: list[int],
                       stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            samples.append(pg.backend_count(database))
        except Exception:  # noqa: S110 - the server is down for part of the run
            pass
        time.sleep(0.1)


def health(gateway: GatewayProcess) -> httpx.Response:
    return httpx.get(gateway.url("/system/health"), timeout=10)


def test_database_crash_under_load_503s_recovers_and_keeps_writes(private_pg, tmp_path):
    url = private_pg.create_database("faults")
    with GatewayProcess.start({"DATABASE_URL": url, "FLOWORK_DB_POOL_SIZE": str(POOL_SIZE),
                               "FLOWORK_DB_POOL_TIMEOUT_S": "5",
                               # each load user creates engines nonstop, far beyond 100
                               "FLOWORK_LIMIT_ENGINES_PER_USER": "1000000"},
                              log_dir=tmp_path, threads=THREADS) as gateway:
        load = Load(gateway)
        samples: list[int] = []
        sampling = threading.Event()
        sampler = threading.Thread(target=sample_connections,
                                   args=(private_pg, "faults", samples, sampling), daemon=True)
        sampler.start()
        workers = load.run()
        try:
            time.sleep(1.5)  # healthy load
            private_pg.stop("immediate")  # a crash: no clean shut-down
            down_at = time.monotonic()
            time.sleep(1.0)
            r = health(gateway)
            assert r.status_code == 503
            assert r.json() == {"status": "unhealthy", "database": "disconnected"}
            time.sleep(1.0)
            restart_at = time.monotonic()
            private_pg.start()
            deadline = time.monotonic() + 30
            while health(gateway).status_code != 200:
                assert time.monotonic() < deadline, "the gateway did not recover by itself"
                time.sleep(0.05)
            recovered_at = time.monotonic()
            time.sleep(2.0)  # load after recovery
        finally:
            load.stop.set()
            for worker in workers:
                worker.join(30)
            sampling.set()
            sampler.join(10)

        outcomes = list(load.outcomes)
        assert all(o.status in (200, 201, 503) for o in outcomes), \
            sorted({(o.status, o.code) for o in outcomes})
        failures = [o for o in outcomes if o.status == 503]
        assert all(o.code == "database_unavailable" and o.retry_after for o in failures), \
            sorted({(o.code, o.retry_after) for o in failures})
        during = [o for o in outcomes if down_at + 0.2 < o.started < restart_at]
        assert during and all(o.status == 503 for o in during), \
            sorted({(o.kind, o.status) for o in during})
        after = [o for o in outcomes if o.started > recovered_at + 0.5]
        assert len(after) > 20
        assert all(o.status in (200, 201) for o in after), \
            sorted({(o.kind, o.status, o.code) for o in after})
        assert sum(o.status == 201 for o in outcomes if o.started < down_at) > 5

        # Nothing committed was lost: each 201 engine is listed for its owner.
        for signer in load.signers:
            r = httpx.get(gateway.url("/user/engines"),
                          headers=signer.headers(timestamp=int(time.time()) + 10))
            listed = {e["id"] for e in r.json()}
            missing = set(load.created.get(signer.address, [])) - listed
            assert not missing, f"{len(missing)} acknowledged engines lost"

        # The pool stayed bounded, before and after the crash.
        assert samples and max(samples) <= POOL_SIZE, samples
        assert "Traceback" not in gateway.log_text(), gateway.log_tail()


def test_a_database_that_never_answers_is_503_not_a_hang(private_pg, tmp_path):
    """Stopped before the first request: the gateway starts (its migrations ran while the
    database was up), then answers 503 at once, and serves again as soon as it returns."""
    url = private_pg.create_database("faults_cold")
    with GatewayProcess.start({"DATABASE_URL": url, "FLOWORK_DB_POOL_SIZE": "2"},
                              log_dir=tmp_path, threads=2) as gateway:
        signer = Signer.new()
        headers = signer.headers(timestamp=int(time.time()) + 10)
        private_pg.stop("fast")
        try:
            for _ in range(10):  # more requests than pooled connections: nothing leaks
                r = httpx.get(gateway.url("/auth/profile"), headers=headers, timeout=10)
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "database_unavailable"
            assert health(gateway).status_code == 503
        finally:
            private_pg.start()
        deadline = time.monotonic() + 30
        while True:
            r = httpx.get(gateway.url("/auth/profile"), headers=headers, timeout=10)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.json()["public_address"] == signer.address
        assert private_pg.backend_count("faults_cold") <= 2


def test_idle_connections_killed_by_the_server_cost_no_failed_request(private_pg, tmp_path):
    """An administrator (or a pooler restart) terminates every session: idle pooled
    connections are noticed at check-out and replaced, so no request fails."""
    url = private_pg.create_database("faults_killed")
    with GatewayProcess.start({"DATABASE_URL": url, "FLOWORK_DB_POOL_SIZE": str(POOL_SIZE)},
                              log_dir=tmp_path, threads=THREADS) as gateway:
        signer = Signer.new()
        headers = signer.headers(timestamp=int(time.time()) + 10)
        with httpx.Client(timeout=10) as http:
            barrier = threading.Barrier(THREADS)

            def warm() -> None:  # several connections in the pool at once
                barrier.wait(timeout=30)
                for _ in range(5):
                    http.get(gateway.url("/user/engines"), headers=headers).raise_for_status()

            threads = [threading.Thread(target=warm) for _ in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert private_pg.backend_count("faults_killed") >= 1
            private_pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = %s", ("faults_killed",))
            time.sleep(0.3)
            statuses = [http.get(gateway.url(path), headers=headers).status_code
                        for path in ("/user/engines", "/auth/profile", "/system/health") * 4]
        assert statuses == [200] * len(statuses), statuses
