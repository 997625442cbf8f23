"""Configuration: declared settings, resolved as defaults < optional TOML file < environment.

The kernel and every plugin declare their settings as :class:`Setting` objects. Nothing is
read that was not declared, every value is parsed and validated at start-up, and a bad value
is a :class:`ConfigError` naming the setting and its owner.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting is missing, malformed or contradicts another. Raised at start-up."""


@dataclass(frozen=True)
class Setting:
    """One configuration value: its name (as in the environment), parser and default.

    ``parse`` receives a string (from the environment) or a native TOML value and returns the
    typed value, raising ``ValueError`` with a readable reason. ``secret`` settings have no
    default and are never printed.
    """

    name: str
    parse: Callable[[Any], Any]
    default: Any = None
    help: str = ""
    secret: bool = False


# -- parsers ---------------------------------------------------------------------------------


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip()


def as_optional_str(value: Any) -> str | None:
    text = as_str(value)
    return text or None


def _number(kind: Callable[[Any], Any], what: str, minimum: Any, maximum: Any) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected {what}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {what}, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise ValueError(f"must be at least {minimum}")
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {maximum}")
        return number

    return parse


def as_int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    return _number(int, "an integer", minimum, maximum)


def as_seconds(minimum: float | None = None, maximum: float | None = None) -> Callable[[Any], float]:
    """A duration in (possibly fractional) seconds."""
    return _number(float, "a number of seconds", minimum, maximum)


def as_list(value: Any) -> list[str]:
    """Comma-separated string, or a TOML array of strings."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        raise ValueError("expected a comma-separated string or a list")
    return [item.strip() for item in items if item.strip()]


def as_networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in as_list(value))
    except ValueError as exc:
        raise ValueError(f"not a CIDR list: {exc}") from None


def as_mapping(value: Any) -> dict[str, str]:
    """``key=value,key=value`` or a TOML table."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    result = {}
    for item in as_list(value):
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        result[key.strip()] = val.strip()
    return result


# -- resolution --------------------------------------------------------------------------------


def load_toml(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    if not path:
        return {}
    file = Path(path)
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"FLOWORK_CONFIG: file not found: {file}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"FLOWORK_CONFIG: {file} is not valid TOML: {exc}") from None
    # Keys are the environment names; a [gateway] table is accepted as well.
    flat = {k: v for k, v in data.items() if k != "gateway"}
    flat.update(data.get("gateway", {}))
    return flat


class Config:
    """Resolved settings, looked up by name: ``config["DATABASE_URL"]``."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._overrides = dict(overrides or {})
        toml_path = self._overrides.get("FLOWORK_CONFIG", self._environ.get("FLOWORK_CONFIG"))
        self._file = load_toml(toml_path)
        self._values: dict[str, Any] = {}
        self._owners: dict[str, str] = {}

    def raw(self, name: str) -> tuple[bool, Any]:
        """(found, value) with precedence overrides > environment > file."""
        for source in (self._overrides, self._environ, self._file):
            if name in source:
                return True, source[name]
        return False, None

    def declare(self, owner: str, settings: Iterable[Setting]) -> None:
        """Resolve and validate ``settings`` on behalf of ``owner`` (kernel or a plugin)."""
        for setting in settings:
            if setting.name in self._owners and self._owners[setting.name] != owner:
                # Two plugins may share a setting only if they agree on it; first one parses.
                continue
            found, value = self.raw(setting.name)
            if not found or (isinstance(value, str) and value.strip() == "" and not setting.secret):
                self._values[setting.name] = setting.default
            else:
                try:
                    self._values[setting.name] = setting.parse(value)
                except ValueError as exc:
                    raise ConfigError(f"{setting.name} (setting of {owner}): {exc}") from None
            self._owners[setting.name] = owner

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"setting {name!r} was not declared by any enabled plugin") from None

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def owner(self, name: str) -> str | None:
        return self._owners.get(name)

    def items(self) -> list[tuple[str, Any]]:
        return sorted(self._values.items())
