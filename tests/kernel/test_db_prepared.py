"""gateway_kernel.db.Prepared: SQL generated once per database, run with new values."""

from __future__ import annotations

import datetime as dt

import peewee
import pytest

from gateway_kernel import Account, Param, Prepared, create_gateway

BY_ADDRESS = Prepared(lambda: Account.select().where(Account.address == Param("address")).limit(1))
NEWER_THAN = Prepared(lambda: (
    Account.select(Account.address)
    .where((Account.created_at > Param("since")) & (Account.tier == "gold"))
    .order_by(Account.address)
    .tuples()
))
COUNT_BY_TIER = Prepared(lambda: Account.select(peewee.fn.COUNT(Account.id))
                         .where(Account.tier == Param("tier")))


@pytest.fixture
def two_gateways(tmp_path):
    """Two gateways on two SQLite databases (the SQL is cached per database)."""
    gateways = []
    for name in ("a", "b"):
        gateway = create_gateway(environ={}, settings={
            "FLOWORK_PLUGINS": "none", "DATABASE_URL": f"sqlite:///{tmp_path / name}.db"})
        gateway.migrate()
        gateways.append(gateway)
    yield gateways
    for gateway in gateways:
        gateway.close()


def test_runs_with_new_values_and_returns_what_the_query_would(make_gateway):
    gateway = make_gateway(plugins="none")
    day = dt.datetime(2024, 1, 1)
    token = gateway.activate()
    try:
        for i, tier in enumerate(("gold", "gold", "free")):
            Account.create(address=f"0x{i}", public_address=f"0x{i}", username=f"u{i}",
                           tier=tier, created_at=day + dt.timedelta(days=i))
        found = BY_ADDRESS.first(address="0x1")
        assert isinstance(found, Account) and found.username == "u1"
        assert BY_ADDRESS.first(address="0x9") is None
        # a datetime goes through the field's converter, a fixed value stays in place
        assert list(NEWER_THAN.run(since=day)) == [("0x1",)]
        assert list(NEWER_THAN.run(since=day - dt.timedelta(days=1))) == [("0x0",), ("0x1",)]
        assert COUNT_BY_TIER.scalar(tier="gold") == 2
        assert COUNT_BY_TIER.scalar(tier="none") == 0
        with pytest.raises(TypeError, match="tier"):
            COUNT_BY_TIER.scalar()
    finally:
        from gateway_kernel.db import deactivate

        deactivate(token)


def test_sql_is_built_once_per_database(two_gateways):
    from gateway_kernel.db import deactivate

    built = []
    query = Prepared(lambda: built.append(1) or
                     Account.select(Account.username).where(Account.address == Param("a")).tuples())
    for n, gateway in enumerate(two_gateways):
        token = gateway.activate()
        try:
            Account.create(address="0xa", public_address="0xa", username=f"gateway {n}")
            for _ in range(3):
                assert list(query.run(a="0xa")) == [(f"gateway {n}",)]
        finally:
            deactivate(token)
    assert len(built) == len(two_gateways)  # once for each database, never per call
    sql, params = query.sql(two_gateways[0].db)
    assert "SELECT" in sql and len(params) == 1
