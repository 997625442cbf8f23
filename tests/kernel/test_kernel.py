"""The kernel: plugin loading, route ownership, auth dispatch, errors, config, migrations."""

from __future__ import annotations

import json
import logging
import sys

import falcon.testing
import pytest

from gateway_kernel import ConfigError, Migration, PluginError, create_gateway, create_tables
from gateway_kernel.config import Config, Setting, as_int
from gateway_plugins import BUNDLED
from tests.support.kernel_plugins import (
    ClashPlugin,
    MisspeltPlugin,
    NeedsMissingPlugin,
    Note,
    NotesPlugin,
    TwoSchemesPlugin,
)


def notes_gateway(make_gateway, **kwargs):
    return make_gateway(plugins="none", extra_plugins=[NotesPlugin(**kwargs)])


# -- plugin loading ------------------------------------------------------------------------


def test_bundled_plugins_load_in_order(gateway):
    assert list(gateway.plugins) == list(BUNDLED)


def test_unknown_plugin_name_fails_loudly_listing_installed(tmp_path):
    with pytest.raises(PluginError) as err:
        create_gateway(environ={}, settings={"FLOWORK_PLUGINS": "auth_crypto,ratelimitt",
                                             "DATABASE_URL": "sqlite:///:memory:"})
    assert "ratelimitt" in str(err.value)
    assert "auth_crypto" in str(err.value)  # the installed ones are listed


def test_broken_plugin_fails_loudly_with_its_name(tmp_path, monkeypatch):
    # A third-party package whose entry point cannot be imported.
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[flowork_gateway.plugins]\nbroken = broken_plugin_mod:Plugin\n")
    (tmp_path / "broken_plugin_mod.py").write_text("raise ImportError('no such dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from stevedore.extension import ExtensionManager

    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})  # stevedore caches per process
    with pytest.raises(PluginError) as err:
        create_gateway(environ={}, settings={"FLOWORK_PLUGINS": "broken",
                                             "DATABASE_URL": "sqlite:///:memory:"})
    assert "'broken'" in str(err.value) and "no such dependency" in str(err.value)


def test_misspelt_hookimpl_fails_at_startup_naming_plugin(make_gateway):
    with pytest.raises(PluginError) as err:
        make_gateway(plugins="none", extra_plugins=[MisspeltPlugin()])
    assert "misspelt" in str(err.value) and "gateway_route" in str(err.value)


def test_route_clash_names_both_plugins(make_gateway):
    with pytest.raises(PluginError) as err:
        make_gateway(plugins="none", extra_plugins=[NotesPlugin(), ClashPlugin()])
    assert "'notes'" in str(err.value) and "'clash'" in str(err.value)


def test_missing_required_plugin_names_both(make_gateway):
    with pytest.raises(PluginError) as err:
        make_gateway(plugins="none", extra_plugins=[NeedsMissingPlugin()])
    assert "'needy'" in str(err.value) and "'not_enabled_plugin'" in str(err.value)


def test_bundled_requirement_is_checked(make_gateway):
    with pytest.raises(PluginError) as err:
        make_gateway(plugins="auth_crypto,auth_internal,sharing")
    assert "'sharing'" in str(err.value) and "'engines'" in str(err.value)


def test_route_needing_a_principal_kind_without_scheme_fails(make_gateway):
    with pytest.raises(PluginError) as err:
        make_gateway(plugins="none", extra_plugins=[NotesPlugin(auth="user")])
    assert "'user'" in str(err.value) and "/notes" in str(err.value)


def test_disabling_a_plugin_removes_its_routes(make_gateway):
    full = falcon.testing.TestClient(notes_gateway(make_gateway))
    assert full.simulate_get("/api/v1/notes").status_code == 200
    bare = falcon.testing.TestClient(make_gateway(plugins="none"))
    r = bare.simulate_get("/api/v1/notes")
    assert r.status_code == 404 and r.json["code"] == "not_found"


def test_plugin_settings_are_declared_and_validated(make_gateway):
    plugin = NotesPlugin()
    make_gateway(plugins="none", extra_plugins=[plugin], settings={"NOTES_LIMIT": "7"})
    assert plugin.configured_limit == 7
    with pytest.raises(ConfigError) as err:
        make_gateway(plugins="none", extra_plugins=[NotesPlugin()], settings={"NOTES_LIMIT": "99"})
    assert "NOTES_LIMIT" in str(err.value) and "notes" in str(err.value)


def test_plugin_info_lists_hooks_models_routes(make_gateway):
    gateway = notes_gateway(make_gateway)
    (info,) = gateway.plugin_info()
    assert info.name == "notes" and info.version == "1.2.3"
    assert "gateway_routes" in info.hooks and "gateway_migrations" in info.hooks
    assert info.models == ["notes_note"]
    assert "/api/v1/notes" in info.routes


def test_gateways_in_one_process_keep_their_own_databases(make_gateway, tmp_path):
    one = notes_gateway(make_gateway)
    two = make_gateway(plugins="none", extra_plugins=[NotesPlugin()],
                       settings={"DATABASE_URL": f"sqlite:///{(tmp_path / 'two.db').as_posix()}"})
    c1, c2 = falcon.testing.TestClient(one), falcon.testing.TestClient(two)
    assert c1.simulate_post("/api/v1/notes", json={"text": "only in one"}).status_code == 201
    assert c1.simulate_get("/api/v1/notes").json["notes"] == ["only in one"]
    assert c2.simulate_get("/api/v1/notes").json["notes"] == []


# -- errors ----------------------------------------------------------------------------------


def test_unknown_path_is_enveloped_404(make_gateway):
    client = falcon.testing.TestClient(make_gateway(plugins="none"))
    r = client.simulate_get("/nowhere")
    assert r.status_code == 404
    assert set(r.json) == {"error", "code"} and r.json["code"] == "not_found"


def test_wrong_method_is_enveloped_405_with_allow(make_gateway):
    client = falcon.testing.TestClient(notes_gateway(make_gateway))
    r = client.simulate_delete("/api/v1/notes")
    assert r.status_code == 405 and r.json["code"] == "method_not_allowed"
    assert "GET" in r.headers["Allow"] and "POST" in r.headers["Allow"]


def test_bad_json_is_400_invalid_body(make_gateway):
    client = falcon.testing.TestClient(notes_gateway(make_gateway))
    r = client.simulate_post("/api/v1/notes", body=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["code"] == "invalid_body"
    r = client.simulate_post("/api/v1/notes", json=[1, 2])
    assert r.status_code == 400 and r.json["code"] == "invalid_body"


def test_oversized_body_is_413(make_gateway):
    gateway = make_gateway(plugins="none", extra_plugins=[NotesPlugin()],
                           settings={"FLOWORK_MAX_BODY_BYTES": "100"})
    client = falcon.testing.TestClient(gateway)
    r = client.simulate_post("/api/v1/notes", json={"text": "x" * 200})
    assert r.status_code == 413 and r.json["code"] == "body_too_large"


def test_unexpected_exception_is_opaque_500_logged_with_request_id(make_gateway, caplog):
    client = falcon.testing.TestClient(notes_gateway(make_gateway))
    with caplog.at_level(logging.ERROR, logger="gateway_kernel"):
        r = client.simulate_get("/api/v1/boom", headers={"X-Request-ID": "req-123"})
    assert r.status_code == 500 and r.json["code"] == "internal_error"
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert r.headers["X-Request-ID"] == "req-123"
    assert any("req-123" in rec.getMessage() for rec in caplog.records)


def test_request_id_is_echoed_when_sane_and_replaced_when_not(make_gateway):
    client = falcon.testing.TestClient(make_gateway(plugins="none"))
    assert client.simulate_get("/api/v1/system/health",
                               headers={"X-Request-ID": "abc-1"}).headers["X-Request-ID"] == "abc-1"
    r = client.simulate_get("/api/v1/system/health", headers={"X-Request-ID": "bad id\x7f" * 50})
    assert r.headers["X-Request-ID"] != "bad id\x7f" * 50 and len(r.headers["X-Request-ID"]) == 32
    assert client.simulate_get("/x").headers["X-Request-ID"]  # errors carry one too


def test_database_down_is_503_and_health_unhealthy():
    # Nothing listens on port 1: every query fails to connect.
    down = create_gateway(environ={}, settings={
        "FLOWORK_PLUGINS": "none", "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x",
        "FLOWORK_DB_POOL_TIMEOUT_S": "1"}, extra_plugins=[NotesPlugin(migrations=[])])
    try:
        client = falcon.testing.TestClient(down)
        r = client.simulate_get("/api/v1/system/health")
        assert r.status_code == 503
        assert r.json == {"status": "unhealthy", "database": "disconnected"}
        r = client.simulate_get("/api/v1/notes")
        assert r.status_code == 503 and r.json["code"] == "database_unavailable"
    finally:
        down.close()


# -- auth dispatch -----------------------------------------------------------------------------


def auth_gateway(make_gateway, order: str | None = None):
    settings = {"FLOWORK_AUTH_SCHEMES": order} if order else {}
    return make_gateway(plugins="none", settings=settings,
                        extra_plugins=[TwoSchemesPlugin(), NotesPlugin(auth="user")])


def test_route_needs_its_principal_kind(make_gateway):
    client = falcon.testing.TestClient(auth_gateway(make_gateway))
    r = client.simulate_get("/api/v1/notes")
    assert r.status_code == 401 and r.json["code"] == "missing_alpha"
    r = client.simulate_get("/api/v1/notes", headers={"X-Beta": "good"})
    assert r.status_code == 200 and r.json["kind"] == "user"


def test_present_but_wrong_credential_is_401_even_if_another_would_pass(make_gateway):
    client = falcon.testing.TestClient(auth_gateway(make_gateway))
    r = client.simulate_get("/api/v1/notes", headers={"X-Alpha": "bad", "X-Beta": "good"})
    assert r.status_code == 401 and r.json["code"] == "bad_alpha"


def test_scheme_order_is_configurable(make_gateway):
    client = falcon.testing.TestClient(auth_gateway(make_gateway, order="beta,alpha"))
    r = client.simulate_get("/api/v1/notes")
    assert r.json["code"] == "missing_beta"
    r = client.simulate_get("/api/v1/notes", headers={"X-Alpha": "bad", "X-Beta": "bad"})
    assert r.json["code"] == "bad_beta"


def test_unknown_scheme_in_order_is_a_config_error(make_gateway):
    with pytest.raises(ConfigError) as err:
        auth_gateway(make_gateway, order="gamma")
    assert "gamma" in str(err.value)


def test_preflight_needs_no_auth_and_lists_scheme_headers(make_gateway):
    client = falcon.testing.TestClient(auth_gateway(make_gateway))
    for path in ("/api/v1/notes", "/api/v1/anything/else", "/elsewhere"):
        r = client.simulate_options(path, headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-Alpha"})
        assert r.status_code == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        allowed = r.headers["Access-Control-Allow-Headers"]
        assert "X-Alpha" in allowed and "X-Beta" in allowed and "Content-Type" in allowed


def test_cors_origin_allow_list(make_gateway):
    gateway = make_gateway(plugins="none", settings={"FLOWORK_CORS_ORIGINS": "https://a.example"})
    client = falcon.testing.TestClient(gateway)
    r = client.simulate_get("/api/v1/system/health", headers={"Origin": "https://a.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://a.example"
    r = client.simulate_get("/api/v1/system/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_405_wins_over_401_for_unserved_method(make_gateway):
    client = falcon.testing.TestClient(auth_gateway(make_gateway))
    r = client.simulate_put("/api/v1/notes")
    assert r.status_code == 405


# -- config ----------------------------------------------------------------------------------


def test_config_precedence_defaults_file_env_overrides(tmp_path):
    toml = tmp_path / "gw.toml"
    toml.write_text('A = "7"\nB = 8\n[gateway]\nC = "9"\n')
    settings = [Setting(n, as_int(), 1) for n in ("A", "B", "C", "D")]
    config = Config(environ={"FLOWORK_CONFIG": str(toml), "B": "80"}, overrides={"C": 90})
    config.declare("test", settings)
    assert (config["A"], config["B"], config["C"], config["D"]) == (7, 80, 90, 1)


def test_config_file_errors_are_readable(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config(environ={"FLOWORK_CONFIG": str(bad)})
    with pytest.raises(ConfigError, match="not found"):
        Config(environ={"FLOWORK_CONFIG": str(tmp_path / "missing.toml")})


def test_bad_database_url_is_a_config_error():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_gateway(environ={}, settings={"FLOWORK_PLUGINS": "none", "DATABASE_URL": "ftp://x"})


# -- migrations ------------------------------------------------------------------------------


def test_migrations_are_recorded_per_plugin_and_applied_once(make_gateway):
    calls = []

    def add_column(db):
        calls.append(1)
        db.execute_sql("ALTER TABLE notes_note ADD COLUMN extra VARCHAR(10)")

    migrations = [create_tables("0001", Note), Migration("0002_extra", add_column)]
    gateway = notes_gateway(make_gateway, migrations=migrations)
    assert calls == [1]
    assert gateway.migrate() == []  # nothing pending
    second = make_gateway(plugins="none", extra_plugins=[NotesPlugin(migrations=migrations)])
    assert second.migrate() == [] and calls == [1]
    from gateway_kernel.db import MigrationRecord

    with gateway.using_db():
        rows = {(r.plugin, r.name) for r in MigrationRecord.select()}
    assert {("kernel", "0001_account"), ("notes", "0001"), ("notes", "0002_extra")} <= rows


def test_failed_migration_is_not_recorded_and_rolls_back(make_gateway):
    def broken(db):
        db.execute_sql("CREATE TABLE notes_half (id INTEGER)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        notes_gateway(make_gateway, migrations=[create_tables("0001", Note), Migration("0002", broken)])
    gateway = make_gateway(plugins="none", extra_plugins=[NotesPlugin(
        migrations=[create_tables("0001", Note), Migration("0002", lambda db: None)])])
    assert gateway.migrate() == []  # 0002 applied (fixed) by the second start
    assert "notes_half" not in gateway.db.get_tables()


# -- CLI -------------------------------------------------------------------------------------


def run_cli(monkeypatch, capsys, args, env):
    from gateway_kernel import cli

    for key in ("FLOWORK_PLUGINS", "DATABASE_URL", "FLOWORK_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(args)
    return code, capsys.readouterr()


def test_cli_plugins_lists_the_five_bundled(monkeypatch, capsys, tmp_path):
    code, out = run_cli(monkeypatch, capsys, ["plugins"],
                        {"DATABASE_URL": f"sqlite:///{tmp_path.as_posix()}/c.db"})
    assert code == 0
    listed = [line.split()[0] for line in out.out.splitlines() if not line.startswith(" ")]
    assert listed == list(BUNDLED)
    assert "hooks:" in out.out and "routes:" in out.out


def test_cli_plugins_all_shows_installed_but_disabled(monkeypatch, capsys, tmp_path):
    code, out = run_cli(monkeypatch, capsys, ["plugins", "--all"],
                        {"DATABASE_URL": f"sqlite:///{tmp_path.as_posix()}/c.db",
                         "FLOWORK_PLUGINS": "auth_crypto"})
    assert code == 0
    assert "auth_crypto" in out.out and "proxy (installed, not enabled)" in out.out


def test_cli_migrate_and_routes(monkeypatch, capsys, tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path.as_posix()}/c.db"}
    code, out = run_cli(monkeypatch, capsys, ["migrate"], env)
    assert code == 0 and "kernel:0001_account" in out.out
    code, out = run_cli(monkeypatch, capsys, ["migrate"], env)
    assert out.out.strip() == "database is up to date"
    code, out = run_cli(monkeypatch, capsys, ["routes"], env)
    assert code == 0 and "/api/v1/system/health" in out.out and "kernel" in out.out


def test_cli_reports_config_errors_without_traceback(monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, ["migrate"], {"FLOWORK_PLUGINS": "nope_plugin"})
    assert code == 2 and "nope_plugin" in out.err and "Traceback" not in out.err


def test_openapi_lists_kernel_routes(make_gateway):
    client = falcon.testing.TestClient(make_gateway(plugins="none"))
    doc = client.simulate_get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1") and "/system/health" in doc["paths"]
    json.dumps(doc)


def test_module_has_no_global_plugin_manager():
    import gateway_kernel.app as app_module

    assert not [v for v in vars(app_module).values() if type(v).__name__ == "PluginManager"]
    assert "pluggy" in sys.modules


def _runtime_imports_of_app(path) -> list[str]:
    """``from .app import …`` statements of a module that run at import or call time (not
    under ``if TYPE_CHECKING:``)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded = {id(sub) for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for sub in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in guarded:
            module = node.module or ""
            if (module in ("app", "gateway_kernel.app")
                    or (not module and any(a.name == "app" for a in node.names))):
                found.append(ast.unparse(node))
    return found


def test_only_the_facade_users_import_the_gateway_module():
    """No import cycle: the kernel's modules get API_PREFIX and friends from gateway_kernel.api;
    only what builds a gateway (the CLI, the API reference, the testing kit) imports app."""
    from pathlib import Path

    import gateway_kernel

    root = Path(gateway_kernel.__file__).parent
    importing = {str(p.relative_to(root)) for p in root.rglob("*.py") if _runtime_imports_of_app(p)}
    assert importing == {"cli.py", "apidoc.py", "testing.py"}


def test_service_credentials_follow_the_plugins_settings(make_gateway):
    from gateway_kernel.testing import SERVICE_SECRET, credential_settings, service_headers_for

    assert credential_settings("bundled") == ["GATEWAY_SECRET_TOKEN"]
    assert credential_settings("auth_crypto,engines") == []
    plugin = NotesPlugin()
    plugin.settings = (*NotesPlugin.settings, Setting("NOTES_KEY", str, None, credential="service"))
    gateway = make_gateway(plugins="auth_internal", extra_plugins=[plugin])
    assert gateway.config["NOTES_KEY"] == gateway.config["GATEWAY_SECRET_TOKEN"] == SERVICE_SECRET
    given = make_gateway(plugins="auth_internal", settings={"GATEWAY_SECRET_TOKEN": "y" * 32})
    assert service_headers_for(given, "y" * 32) == {"X-API-Key": given.config["GATEWAY_SECRET_TOKEN"]}
    assert service_headers_for(gateway) == {"X-API-Key": SERVICE_SECRET}
    assert service_headers_for(make_gateway(plugins="none")) == {}


def test_service_headers_are_those_of_the_tests_gateway(make_gateway, service_headers):
    gateway = make_gateway(plugins="auth_crypto,auth_internal,engines,killswitch")
    assert dict(service_headers) == {"X-API-Key": gateway.config["GATEWAY_SECRET_TOKEN"]}
    client = falcon.testing.TestClient(gateway)
    r = client.simulate_get("/api/v1/system/disabled-components", headers=service_headers)
    assert r.status_code == 200


# -- lifecycle, middleware, CORS and veto hooks ----------------------------------------------------


def test_lifecycle_middleware_cors_and_veto_hooks(make_gateway):
    from tests.support.kernel_plugins import LifecyclePlugin

    plugin = LifecyclePlugin()
    gateway = make_gateway(plugins="none", extra_plugins=[TwoSchemesPlugin(), NotesPlugin(auth="user"),
                                                          plugin])
    assert plugin.events == ["startup"]  # make_gateway starts the gateway once
    gateway.start()
    assert plugin.events == ["startup"]
    client = falcon.testing.TestClient(gateway)
    r = client.simulate_get("/api/v1/notes", headers={"X-Alpha": "good"})
    assert r.status_code == 200 and r.headers["X-Stamped"] == "yes"
    vetoed = client.simulate_get("/api/v1/notes", headers={"X-Beta": "good"})
    assert vetoed.status_code == 404 and vetoed.json["code"] == "not_found"
    assert vetoed.headers["X-Stamped"] == "yes"  # middleware runs on errors too
    preflight = client.simulate_options("/api/v1/notes")
    assert "X-Lifecycle" in preflight.headers["Access-Control-Allow-Headers"]
    gateway.close()
    assert plugin.events[-1] == "shutdown"


def test_health_reuses_a_healthy_answer_briefly_and_forgets_it_on_a_database_error(make_gateway):
    gateway = notes_gateway(make_gateway)
    client = falcon.testing.TestClient(gateway)
    queries = []
    original = gateway.db.execute_sql

    def counting(sql, *args, **kwargs):
        queries.append(sql)
        return original(sql, *args, **kwargs)

    gateway.db.execute_sql = counting
    try:
        for _ in range(5):
            assert client.simulate_get("/api/v1/system/health").status_code == 200
        assert queries.count("SELECT 1") == 1  # one check serves the next half second
        # A request that meets a database error ends the reuse at once.
        gateway.db.execute_sql = lambda *a, **k: (_ for _ in ()).throw(
            __import__("peewee").OperationalError("gone"))
        assert client.simulate_get("/api/v1/notes").status_code == 503
        r = client.simulate_get("/api/v1/system/health")
        assert r.status_code == 503 and r.json["status"] == "unhealthy"
    finally:
        gateway.db.execute_sql = original
