"""Upgrading a database made by an older schema version keeps every row, and the API serves it.

The "older version" is built from today's migration plan: only the first migration of the
kernel and of every plugin (what the first release shipped), with the tables of plugins split
off since then created the way the first release did, by the plugin they came from (MOVED).
Every table that exists then is
filled with rows, generated from the models but restricted to the columns the old table has,
then the current migrations run and every row must read back unchanged. Runs on SQLite and,
with FLOWORK_TEST_POSTGRES_URL, on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import falcon.testing
import peewee
import pytest

from gateway_kernel import Account, create_gateway
from gateway_kernel.db import Migration, MigrationRecord, migrate
from gateway_kernel.testing import SERVICE_SECRET
from gateway_plugins.engines.tokens import new_engine_token, token_digest

ROWS_PER_TABLE = 3
#: Plugins whose tables an older version created in another plugin's first migration:
#: plugin -> the plugin that created them (issue 15 split these out of engines).
MOVED = {"killswitch": "engines", "user_state": "engines"}
_NS = uuid.UUID("6f1c2a52-0000-4000-8000-0000000f10a7")
_BASE_TIME = dt.datetime(2025, 3, 1, 12, 0, 0)


def _value(field: peewee.Field, table: str, i: int) -> Any:
    """A deterministic, per-row unique value that fits ``field``."""
    if isinstance(field, peewee.BooleanField):
        return i % 2 == 0
    if isinstance(field, peewee.DateTimeField):
        return _BASE_TIME + dt.timedelta(minutes=i)
    if isinstance(field, peewee.DateField):
        return _BASE_TIME.date() + dt.timedelta(days=i)
    if isinstance(field, peewee.FloatField | peewee.DecimalField):
        return i + 0.5
    if isinstance(field, peewee.IntegerField):
        return 1000 + i
    if isinstance(field, peewee.CharField):
        text = str(uuid.uuid5(_NS, f"{table}.{field.column_name}.{i}"))  # a valid UUID id too
        return text[: field.max_length or len(text)]
    if isinstance(field, peewee.TextField):
        return json.dumps(f"{table} text {i}")
    raise AssertionError(f"no value generator for {table}.{field.column_name} ({type(field)})")


def _models(gateway) -> list[type[peewee.Model]]:
    models: list[type[peewee.Model]] = [Account]
    for items in gateway.hook.gateway_models():
        models.extend(items)
    return peewee.sort_models(models)


def _fill(gateway, models, overrides: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict]]:
    """Insert ROWS_PER_TABLE rows into every model table that exists; return them by table."""
    db = gateway.db
    tables = set(db.get_tables())
    inserted: dict[str, list[dict[str, Any]]] = {}
    ids: dict[str, list[Any]] = {}
    for model in models:
        table = model._meta.table_name
        if table not in tables:
            continue  # added by a later migration
        columns = {c.name for c in db.get_columns(table)}
        rows = []
        for i in range(ROWS_PER_TABLE):
            row: dict[str, Any] = {}
            fk_number = 0
            for field in model._meta.sorted_fields:
                if field.column_name not in columns or isinstance(field, peewee.AutoField):
                    continue
                if isinstance(field, peewee.ForeignKeyField):
                    targets = ids[field.rel_model._meta.table_name]
                    row[field.column_name] = targets[(i + fk_number) % len(targets)]
                    fk_number += 1
                else:
                    row[field.column_name] = _value(field, table, i)
            row.update(overrides.get(table, [{}] * ROWS_PER_TABLE)[i])
            by_column = {model._meta.columns[c]: v for c, v in row.items()}
            new_id = model.insert(by_column).execute()
            pk = model._meta.primary_key
            if isinstance(pk, peewee.AutoField):
                row[pk.column_name] = new_id
            rows.append(row)
        inserted[table] = rows
        ids[table] = [row[model._meta.primary_key.column_name] for row in rows]
    return inserted


def _read_back(model: type[peewee.Model], row: dict[str, Any]) -> dict[str, Any] | None:
    pk = model._meta.primary_key
    fields = [model._meta.columns[c] for c in row]
    found = model.select(*fields).where(pk == row[pk.column_name]).dicts().first()
    if found is None:
        return None
    return {model._meta.fields[name].column_name: value for name, value in found.items()}


def old_plan(gateway) -> list[tuple[str, list[Migration]]]:
    plan = gateway.migration_plan()
    first = {plugin: migrations[:1] for plugin, migrations in plan}
    old = []
    for plugin, migrations in plan:
        if plugin in MOVED or not migrations:
            continue
        parts = [migrations[0], *(first[p][0] for p, origin in MOVED.items()
                                  if origin == plugin and first.get(p))]

        def apply(db, parts=parts) -> None:
            for part in parts:
                part.apply(db)

        old.append((plugin, [Migration(migrations[0].name, apply)]))
    return old


@pytest.fixture
def old_gateway(gateway_database_url):
    """A gateway whose database holds only the first migration of the kernel and each plugin,
    the tables of a MOVED plugin made (and recorded) by the first migration of its origin."""
    gateway = create_gateway(environ={}, settings={
        "DATABASE_URL": gateway_database_url,
        "FLOWORK_PLUGINS": "bundled",
        "GATEWAY_SECRET_TOKEN": SERVICE_SECRET,
    })
    migrate(gateway.db, old_plan(gateway))
    try:
        yield gateway
    finally:
        gateway.close()


def test_upgrade_from_first_schema_keeps_every_row_and_serves_it(old_gateway, make_signer):
    gateway = old_gateway
    signers = [make_signer() for _ in range(ROWS_PER_TABLE)]
    tokens = [new_engine_token() for _ in range(ROWS_PER_TABLE)]
    overrides = {
        Account._meta.table_name: [
            {"address": s.address.lower(), "public_address": s.address, "username": s.address}
            for s in signers
        ],
        "engines_engine": [
            {"token_digest": token_digest(t), "name": f"Old engine {i}", "last_seen": None}
            for i, t in enumerate(tokens)
        ],
        "sharing_engine_share": [{"role": "runner"}] * ROWS_PER_TABLE,
        "engines_user_state": [{"key": f"old_key_{i}", "value": json.dumps({"old": i})}
                               for i in range(ROWS_PER_TABLE)],
        "engines_disabled_component": [{"component_id": f"old.component.{i}"}
                                       for i in range(ROWS_PER_TABLE)],
        # Not revoked: a cut-off long before any signature the test makes.
        "auth_crypto_revocation": [{"revoked_before": _BASE_TIME}] * ROWS_PER_TABLE,
    }
    models = _models(gateway)
    token = gateway.activate()
    try:
        with gateway.db.connection_context():
            before = _fill(gateway, models, overrides)
            counts = {m._meta.table_name: m.select().count() for m in models
                      if m._meta.table_name in before}
        done = {f"{p}:{m.name}" for p, ms in old_plan(gateway) for m in ms}
        pending = [f"{p}:{m.name}" for p, ms in gateway.migration_plan() for m in ms
                   if f"{p}:{m.name}" not in done]
        assert {f"{p}:0001_initial" for p in MOVED} <= set(pending)  # they find their tables
        assert gateway.migrate() == pending
        with gateway.db.connection_context():
            planned = {p for p, ms in gateway.migration_plan() if ms}
            assert {r.plugin for r in MigrationRecord.select()} == planned
            for model in models:
                table = model._meta.table_name
                if table not in before:
                    continue
                assert model.select().count() == counts[table], f"{table}: row count changed"
                for row in before[table]:
                    assert _read_back(model, row) == row, f"{table}: row changed by the upgrade"
    finally:
        from gateway_kernel.db import deactivate

        deactivate(token)
    assert {"engines_engine", "sharing_engine_share", "engines_user_state",
            "engines_disabled_component", Account._meta.table_name} <= set(before)
    # The moved tables kept their names and have one owner each: their new plugin.
    assert gateway.table_owners["engines_disabled_component"] == "killswitch"
    assert gateway.table_owners["engines_user_state"] == "user_state"

    # The API serves the old rows: owners see their engines, engine tokens still work.
    gateway.start()
    client = falcon.testing.TestClient(gateway)
    engines = before["engines_engine"]
    for i, signer in enumerate(signers):
        r = client.simulate_get("/api/v1/user/engines", headers=signer.headers())
        assert r.status_code == 200, r.text
        assert [e["id"] for e in r.json] == [engines[i]["id"]]
        assert r.json[0]["name"] == f"Old engine {i}"
    r = client.simulate_post("/api/v1/engine/heartbeat", json={},
                             headers={"X-Engine-Token": tokens[0]})
    assert r.status_code == 200, r.text
    assert r.json["engine_id"] == engines[0]["id"]
    shares = before.get("sharing_engine_share")
    if shares:
        owner_engine = engines[0]["id"]
        r = client.simulate_get(f"/api/v1/engines/{owner_engine}/shares",
                                headers=signers[0].headers())
        assert r.status_code == 200, r.text
        assert [s["public_address"] for s in r.json] == [signers[1].address]
    # The kill switch and GUI state written under engines are served by their own plugins.
    r = client.simulate_get("/api/v1/system/disabled-components",
                            headers={"X-API-Key": SERVICE_SECRET})
    assert r.status_code == 200 and r.json == [f"old.component.{i}" for i in range(ROWS_PER_TABLE)]
    for i, signer in enumerate(signers):
        r = client.simulate_get(f"/api/v1/user/state/old_key_{i}", headers=signer.headers())
        assert r.status_code == 200 and r.json == {"old": i}, r.text


def test_enabling_more_plugins_on_an_existing_database_keeps_accounts(gateway_database_url,
                                                                     make_signer):
    """A database that served with auth_crypto alone gains the other plugins' tables."""
    settings = {"DATABASE_URL": gateway_database_url, "GATEWAY_SECRET_TOKEN": SERVICE_SECRET}
    signer = make_signer()
    small = create_gateway(environ={}, settings={**settings, "FLOWORK_PLUGINS": "auth_crypto"})
    try:
        small.migrate()
        small.start()
        r = falcon.testing.TestClient(small).simulate_get("/api/v1/auth/profile",
                                                          headers=signer.headers())
        assert r.status_code == 200, r.text
        first_profile = r.json
    finally:
        small.close()

    full = create_gateway(environ={}, settings={**settings, "FLOWORK_PLUGINS": "bundled"})
    try:
        applied = full.migrate()
        assert applied and not any(name.startswith(("kernel:", "auth_crypto:")) for name in applied)
        full.start()
        client = falcon.testing.TestClient(full)
        r = client.simulate_get("/api/v1/auth/profile", headers=signer.headers())
        assert r.status_code == 200, r.text
        assert r.json == first_profile
        r = client.simulate_get("/api/v1/user/engines", headers=signer.headers())
        assert r.status_code == 200 and r.json == []
    finally:
        full.close()


def test_instances_migrating_an_empty_postgres_database_at_once(make_postgres_database):
    """N instances started together on a new database: one applies each migration, the
    others wait (advisory lock) and find nothing left to do; none fails."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    url = make_postgres_database()
    gateways = [create_gateway(environ={}, settings={"DATABASE_URL": url,
                                                     "GATEWAY_SECRET_TOKEN": SERVICE_SECRET})
                for _ in range(4)]
    barrier = threading.Barrier(len(gateways))

    def start(gateway) -> list[str]:
        barrier.wait(timeout=30)
        return gateway.migrate()

    try:
        with ThreadPoolExecutor(len(gateways)) as pool:
            applied = list(pool.map(start, gateways))
        everything = [f"{p}:{m.name}" for p, ms in gateways[0].migration_plan() for m in ms]
        assert sorted(name for names in applied for name in names) == sorted(everything)
    finally:
        for gateway in gateways:
            gateway.close()
