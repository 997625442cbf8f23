"""Loud load-time validation: bad plugin names, route paths without a leading slash, a table
or a setting owned twice and a missing bundle are refused at start-up, naming the plugin(s);
`flowork-gateway plugins` lists each plugin's hooks, declared hooks, tables, routes and
settings, and (with --all) the kernel's built-in plugin."""

from __future__ import annotations

import peewee
import pytest

from gateway_kernel import (
    BaseModel,
    ConfigError,
    GatewayPlugin,
    PluginError,
    Route,
    Setting,
    Sink,
    hookimpl,
)
from gateway_kernel.app import create_gateway
from gateway_kernel.config import as_str


class Named(GatewayPlugin):
    version = "1"

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]


class Things:
    def on_get(self, req, resp) -> None:
        resp.media = {}


class NoSlash(GatewayPlugin):
    name = "no_slash"

    @hookimpl
    def gateway_routes(self, gateway) -> list[Route]:
        return [Route("things", Things(), "public")]


class SinkNoSlash(GatewayPlugin):
    name = "sink_no_slash"

    @hookimpl
    def gateway_sinks(self, gateway) -> list[Sink]:
        return [Sink("stuff", lambda req, resp, path: None, "public")]


class Shadow(BaseModel):
    id = peewee.AutoField()

    class Meta:
        table_name = "engines_engine"


class KernelShadow(BaseModel):
    id = peewee.AutoField()

    class Meta:
        table_name = "gateway_account"


class TableThief(GatewayPlugin):
    name = "thief"

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    @hookimpl
    def gateway_models(self) -> list[type[BaseModel]]:
        return [self.model]


def build(tmp_path, plugins: str, *extra: GatewayPlugin):
    return create_gateway(environ={}, settings={
        "DATABASE_URL": f"sqlite:///{tmp_path.as_posix()}/v.db", "FLOWORK_PLUGINS": plugins,
    }, extra_plugins=extra)


@pytest.mark.parametrize("name", ["my-plugin", "MyPlugin", "9lives", "a" * 51, "has space"])
def test_bad_plugin_name_is_refused_naming_it(tmp_path, name):
    with pytest.raises(PluginError) as info:
        build(tmp_path, "auth_internal", Named(name))
    assert repr(name) in str(info.value) and "lowercase" in str(info.value)


def test_good_plugin_name_is_accepted(tmp_path):
    build(tmp_path, "auth_internal", Named("my_plugin2")).close()


def test_route_without_leading_slash_is_refused(tmp_path):
    with pytest.raises(PluginError) as info:
        build(tmp_path, "auth_internal", NoSlash())
    text = str(info.value)
    assert "'no_slash'" in text and "'things'" in text and "/api/v1things" in text


def test_sink_without_leading_slash_is_refused(tmp_path):
    with pytest.raises(PluginError, match=r"'sink_no_slash'.*'stuff'"):
        build(tmp_path, "auth_internal", SinkNoSlash())


def test_table_of_another_plugin_is_refused_naming_both(tmp_path):
    with pytest.raises(PluginError) as info:
        build(tmp_path, "auth_internal,engines", TableThief(Shadow))
    text = str(info.value)
    assert "'thief'" in text and "'engines'" in text and "engines_engine" in text


def test_table_of_the_kernel_is_refused(tmp_path):
    with pytest.raises(PluginError) as info:
        build(tmp_path, "auth_internal", TableThief(KernelShadow))
    assert "'thief'" in str(info.value) and "the kernel" in str(info.value)


def test_plugins_command_lists_hooks_declared_hooks_tables_routes_settings(tmp_path, capsys,
                                                                             monkeypatch):
    from gateway_kernel import cli

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path.as_posix()}/c.db")
    monkeypatch.setenv("FLOWORK_PLUGINS", "auth_crypto,auth_internal,engines")
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    engines = out[out.index("engines "):]
    assert "  hooks:    " in engines and "gateway_routes" in engines
    declares = next(line for line in engines.splitlines() if line.startswith("  declares: "))
    assert {"flowork_engine_guests", "flowork_engine_guest_role",
            "flowork_engines_shared_with"} <= set(declares[12:].split(", "))
    # The kill switch and user state tables keep their engines_ names but belong to their own
    # plugins (killswitch, user_state), which are not enabled here.
    assert "  tables:   engines_claim, engines_engine\n" in engines
    assert "/api/v1/user/engines" in engines
    assert "  settings: FLOWORK_ENGINE_ONLINE_S" in engines
    auth_internal = out[out.index("auth_internal "):out.index("engines ")]
    assert "declares: flowork_engine_by_token" in auth_internal
    assert "tables:   -" in auth_internal and "settings: GATEWAY_SECRET_TOKEN" in auth_internal


class SettingThief(GatewayPlugin):
    name = "setting_thief"
    settings = (Setting("GATEWAY_SECRET_TOKEN", as_str, ""),)


def test_a_setting_declared_by_a_second_plugin_is_refused_naming_both(tmp_path):
    with pytest.raises(ConfigError) as info:
        build(tmp_path, "auth_internal", SettingThief())
    text = str(info.value)
    assert "GATEWAY_SECRET_TOKEN" in text and "auth_internal" in text and "setting_thief" in text


class Shared:
    """One resource object for two routes: the kernel keeps each route's auth itself."""

    def on_get(self, req, resp) -> None:
        principal = req.context.principal
        resp.media = {"kind": principal.kind if principal else None}


class SharesOneResource(GatewayPlugin):
    name = "shares"

    @hookimpl
    def gateway_routes(self, gateway) -> list[Route]:
        shared = Shared()
        return [Route("/open", shared, "public"), Route("/closed", shared, "service")]


def test_one_resource_object_may_serve_several_routes(make_gateway, service_headers):
    import falcon.testing

    gateway = make_gateway(plugins="auth_internal", extra_plugins=[SharesOneResource()])
    client = falcon.testing.TestClient(gateway)
    assert client.simulate_get("/api/v1/open").json == {"kind": None}
    assert client.simulate_get("/api/v1/closed").status_code == 401
    assert client.simulate_get("/api/v1/closed", headers=service_headers).json == {"kind": "service"}
    assert gateway.route_auth.get("/api/v1/closed", "GET") == ("service", "shares")
    assert gateway.route_auth.get("/api/v1/closed", "POST") is None
    assert not [a for a in vars(Shared()) if a.startswith("__flowork")]


def test_bundled_expands_through_its_entry_point():
    from gateway_kernel.config import expand_plugin_names
    from gateway_plugins import BUNDLED

    assert expand_plugin_names(["bundled", "hello", "auth_crypto"]) == [*BUNDLED, "hello"]
    assert expand_plugin_names(["none"]) == []


def test_a_missing_bundle_is_refused_loudly(tmp_path, monkeypatch):
    from gateway_kernel import config

    monkeypatch.setattr(config, "plugin_bundles", dict)  # no bundle installed
    with pytest.raises(ConfigError, match=r"plugin bundle 'bundled' is not installed.*"
                                          r"flowork_gateway\.bundles"):
        build(tmp_path, "bundled")
    with pytest.raises(ConfigError, match="'bundled' is not installed"):
        create_gateway(environ={}, settings={"DATABASE_URL": f"sqlite:///{tmp_path.as_posix()}/d.db"})
    build(tmp_path, "auth_internal").close()  # naming plugins needs no bundle


def test_the_kernel_plugin_serves_health_and_the_document_with_no_plugin_enabled(make_gateway):
    import falcon.testing

    gateway = make_gateway(plugins="none")
    assert gateway.plugins == {}
    client = falcon.testing.TestClient(gateway)
    assert client.simulate_get("/api/v1/system/health").json["status"] == "healthy"
    assert set(client.simulate_get("/api/v1/openapi.json").json["paths"]) == {
        "/system/health", "/openapi.json"}  # /metrics needs a service scheme
    assert [(o, r.full_path) for o, r in gateway.routes] == [
        ("kernel", "/api/v1/system/health"), ("kernel", "/api/v1/openapi.json")]
    (kernel,) = gateway.plugin_info(kernel=True)
    assert kernel.name == "kernel" and kernel.tables == ["gateway_account",
                                                         "gateway_migration_history"]
    assert "FLOWORK_PLUGINS" in kernel.settings and "gateway_routes" in kernel.hooks


def test_plugins_all_lists_the_kernel_plugin_first(tmp_path, capsys, monkeypatch):
    from gateway_kernel import cli

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path.as_posix()}/c.db")
    monkeypatch.setenv("FLOWORK_PLUGINS", "auth_internal")
    assert cli.main(["plugins", "--all"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kernel ") and "(built in)" in out.splitlines()[0]
    kernel = out[:out.index("auth_internal ")]
    assert "  routes:   /api/v1/system/health, /api/v1/openapi.json, /metrics" in kernel
    assert "  tables:   gateway_account, gateway_migration_history" in kernel
    assert "FLOWORK_PLUGINS" in kernel
    assert cli.main(["plugins"]) == 0
    assert not capsys.readouterr().out.startswith("kernel ")  # enabled plugins only
