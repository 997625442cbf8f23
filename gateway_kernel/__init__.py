"""Flowork Gateway kernel: plugin API, settings, database, auth dispatch. Nothing product-specific."""

from .accounts import Account
from .api import AuthScheme, Command, GatewayPlugin, Principal, Route, Sink, hookimpl
from .app import API_PREFIX, BUNDLED, Gateway, PluginError, create_gateway
from .config import ConfigError, Setting
from .db import BaseModel, Migration, Param, Prepared, create_tables, database, utcnow
from .errors import GatewayError

__all__ = [
    "API_PREFIX",
    "BUNDLED",
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
