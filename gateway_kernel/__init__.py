"""Flowork Gateway kernel: plugin API, settings, database, auth dispatch. Nothing product-specific."""

# Imported on first use (PEP 562): `flowork-gateway --help` and the commands that need no
# configuration load only the CLI, not Falcon, peewee and every plugin.
_EXPORTS = {
    "Account": "accounts",
    "AuthScheme": "api", "Command": "api", "GatewayPlugin": "api", "Principal": "api",
    "Route": "api", "Sink": "api", "hookimpl": "api",
    "API_PREFIX": "api", "Gateway": "app", "PluginError": "loader",
    "create_gateway": "app",
    "ConfigError": "config", "Setting": "config",
    "BaseModel": "db", "Migration": "db", "Param": "db", "Prepared": "db", "create_tables": "db",
    "database": "db", "utcnow": "db",
    "GatewayError": "errors",
}

__all__ = [
    "API_PREFIX",
    "Account",
    "AuthScheme",
    "BaseModel",
    "Command",
    "ConfigError",
    "Gateway",
    "GatewayError",
    "GatewayPlugin",
    "Migration",
    "Param",
    "PluginError",
    "Prepared",
    "Principal",
    "Route",
    "Setting",
    "Sink",
    "create_gateway",
    "create_tables",
    "database",
    "hookimpl",
    "utcnow",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
