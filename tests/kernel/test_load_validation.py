"""Loud load-time validation: bad plugin names, route paths without a leading slash and a
table owned twice are refused at start-up, naming the plugin(s); `flowork-gateway plugins`
lists each plugin's hooks, declared hooks, tables, routes and settings."""

from __future__ import annotations

import peewee
import pytest

from gateway_kernel import BaseModel, GatewayPlugin, PluginError, Route, Sink, hookimpl
from gateway_kernel.app import create_gateway


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
    assert "  tables:   engines_claim, engines_disabled_component, engines_engine" in engines
    assert "/api/v1/user/engines" in engines
    assert "  settings: FLOWORK_ENGINE_ONLINE_S" in engines
    auth_internal = out[out.index("auth_internal "):out.index("engines ")]
    assert "declares: flowork_engine_by_token_digest" in auth_internal
    assert "tables:   -" in auth_internal and "settings: GATEWAY_SECRET_TOKEN" in auth_internal
