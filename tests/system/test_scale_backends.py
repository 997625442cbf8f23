"""Which database backend a DATABASE_URL selects, and the bounds each gets (docs/SCALING.md).

No server is contacted: these check the wiring that multi-instance deployments rely on.
"""

from __future__ import annotations

import pytest

from gateway_kernel import create_gateway
from gateway_kernel.db import is_cockroach, is_pooled, is_postgres, open_database

pytest.importorskip("psycopg2")


@pytest.mark.parametrize("url", ["cockroachdb://root@127.0.0.1:26257/flowork",
                                 "crdb://root@127.0.0.1:26257/flowork?sslmode=require"])
def test_cockroachdb_urls_select_the_pooled_cockroach_driver(url):
    db = open_database(url, pool_size=7)
    assert is_cockroach(db) and is_pooled(db)
    assert db._max_connections == 7
    assert db.connect_params["connect_timeout"] == 5


@pytest.mark.parametrize("url", ["postgresql://u@127.0.0.1/flowork", "postgres://u@127.0.0.1/f"])
def test_postgres_urls_are_upgraded_to_the_pool(url):
    db = open_database(url)
    assert is_postgres(db) and is_pooled(db) and not is_cockroach(db)


def test_sqlite_is_not_pooled_and_waits_for_locks(tmp_path):
    db = open_database(f"sqlite:///{(tmp_path / 'x.db').as_posix()}")
    assert not is_pooled(db)
    assert dict(db._pragmas)["busy_timeout"] >= 1000
    assert dict(db._pragmas)["journal_mode"] == "wal"


def test_pool_settings_reach_the_database():
    gateway = create_gateway(environ={}, settings={
        "DATABASE_URL": "postgresql://u@127.0.0.1:1/flowork",
        "FLOWORK_DB_POOL_SIZE": "6", "FLOWORK_DB_POOL_TIMEOUT_S": "3",
    })
    try:
        assert gateway.db._max_connections == 6
        assert gateway.db._wait_timeout == 3
    finally:
        gateway.close()


def test_unsupported_urls_are_refused():
    with pytest.raises(ValueError):
        open_database("mysql://u@127.0.0.1/flowork")
