"""Configuration: declared settings, resolved as defaults < optional TOML file < environment.

The kernel and every plugin declare their settings as :class:`Setting` objects. Nothing is
read that was not declared, every value is parsed and validated at start-up, and a bad value
is a :class:`ConfigError` naming the setting and its owner.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    default and are never printed. An empty value (``NAME=``) means the default, unless
    ``allow_empty`` is False: settings whose default is the widest access (CORS ``*``, any
    network, any chain) refuse it, so that a blank never silently opens things up.

    ``credential`` names the principal kind whose shared credential the setting holds (a
    service secret: ``credential="service"``): the testing kit gives gateways it builds a
    test value for it (``gateway_kernel.testing.SERVICE_SECRET``).
    """

    name: str
    parse: Callable[[Any], Any]
    default: Any = None
    help: str = ""
    secret: bool = False
    allow_empty: bool = True
    credential: str | None = None


# -- parsers ---------------------------------------------------------------------------------


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip()


def as_optional_str(value: Any) -> str | None:
    text = as_str(value)
    return text or None


def _number(kind: type, what: str, minimum: Any, maximum: Any) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected {what}, got {value!r}")
        if kind is int:
            number = _integer(value)
        else:
            try:
                number = float(value.strip() if isinstance(value, str) else value)
            except (TypeError, ValueError):
                number = None
        if number is None or (kind is float and not math.isfinite(number)):
            raise ValueError(f"expected {what}, got {value!r}")
        if minimum is not None and number < minimum:
            raise ValueError(f"must be at least {_show(minimum)}, got {value!r}")
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {_show(maximum)}, got {value!r}")
        return number

    parse.kind = what  # type: ignore[attr-defined]  # read by tests and `config` output
    return parse


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _integer(value: Any) -> int | None:
    """An int from an int, an integral TOML float, or a string of digits; else None.

    ``int("5.7")`` would fail but ``int(5.7)`` truncates: both are refused, never rounded."""
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def as_int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    """A whole number (``5.7`` is refused, not truncated)."""
    return _number(int, "an integer", minimum, maximum)


#: Longest duration any ``_S`` setting accepts (30 days): a bound that catches unit mistakes
#: (milliseconds given as seconds) without limiting any sensible value.
MAX_SECONDS = 30 * 86400.0


def as_seconds(minimum: float | None = 0.0, maximum: float | None = MAX_SECONDS) -> Callable[[Any], float]:
    """A duration in seconds: the one rule for every ``*_S`` setting.

    A finite, non-negative float (fractions allowed: ``1.5``), within [minimum, maximum]
    (None: 0 and :data:`MAX_SECONDS`)."""
    low = 0.0 if minimum is None else max(0.0, float(minimum))
    high = MAX_SECONDS if maximum is None else float(maximum)
    return _number(float, "a number of seconds", low, high)


def as_secret(min_length: int = 32) -> Callable[[Any], str | None]:
    """A shared secret of at least ``min_length`` characters (an empty value: unset)."""

    def parse(value: Any) -> str | None:
        text = as_str(value)
        if not text:
            return None
        if len(text) < min_length:
            raise ValueError(f"must be at least {min_length} characters long (got {len(text)}); "
                             f"generate one with: python -c \"import secrets; "
                             f"print(secrets.token_urlsafe(32))\"")
        return text

    return parse


def as_choice(choices: Sequence[str]) -> Callable[[Any], str]:
    """One of ``choices`` (case-insensitive)."""

    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def as_list(value: Any) -> list[str]:
    """Comma-separated string, or a TOML array of strings."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        raise ValueError("expected a comma-separated string or a list")
    return [item.strip() for item in items if item.strip()]


_ORIGIN = re.compile(r"https?://[^/\s?#]+", re.IGNORECASE)


def as_origins(value: Any) -> list[str]:
    """CORS origins: ``*`` or ``scheme://host[:port]`` items (no path)."""
    origins = as_list(value)
    bad = [o for o in origins if o != "*" and not _ORIGIN.fullmatch(o)]
    if bad:
        raise ValueError(f"not an origin (scheme://host[:port], or *): {', '.join(bad)}")
    if not origins:
        raise ValueError("no origin given (use * for any origin)")
    return [o if o == "*" else o.rstrip("/").lower() for o in origins]


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
    except OSError as exc:
        raise ConfigError(f"FLOWORK_CONFIG: cannot read {file}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"FLOWORK_CONFIG: {file} is not valid TOML: {exc}") from None
    # Keys are the environment names; a [gateway] table is accepted as well.
    flat = {k: v for k, v in data.items() if k != "gateway"}
    gateway = data.get("gateway", {})
    if not isinstance(gateway, dict):
        raise ConfigError(f"FLOWORK_CONFIG: {file}: 'gateway' must be a table")
    flat.update(gateway)
    return flat


#: Entry-point group of plugin bundles: a name in ``FLOWORK_PLUGINS`` that is a bundle stands
#: for its plugins, in order (``bundled = "gateway_plugins:BUNDLED"``, the default's). The
#: kernel itself names no plugin.
BUNDLES_ENTRY_POINT_GROUP = "flowork_gateway.bundles"
#: The bundle ``FLOWORK_PLUGINS`` enables by default.
DEFAULT_BUNDLE = "bundled"


def plugin_bundles() -> dict[str, Any]:
    """Every installed bundle entry point: name → entry point (not loaded)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=BUNDLES_ENTRY_POINT_GROUP)}


def _bundle(name: str, entry: Any) -> tuple[str, ...]:
    try:
        names = entry.load()
    except Exception as exc:
        raise ConfigError(f"plugin bundle {name!r} failed to load: {exc!r}") from None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"plugin bundle {name!r} ({entry.value}) is not a sequence of "
                          f"plugin names")
    return tuple(names)


def expand_plugin_names(names: Iterable[str]) -> list[str]:
    """Bundle names (``bundled``) → their plugins, from the ``flowork_gateway.bundles``
    entry points; ``none`` → nothing; duplicates dropped. ``bundled`` without an installed
    bundle of that name is a :class:`ConfigError`."""
    bundles: dict[str, Any] | None = None
    result: list[str] = []
    for name in names:
        if name == "none":
            continue
        if bundles is None:
            bundles = plugin_bundles()
        if name in bundles:
            items = _bundle(name, bundles[name])
        elif name == DEFAULT_BUNDLE:
            raise ConfigError(
                f"plugin bundle {name!r} is not installed (no {name!r} entry point in the "
                f"{BUNDLES_ENTRY_POINT_GROUP!r} group; installed bundles: "
                f"{', '.join(sorted(bundles)) or 'none'}); name the plugins in FLOWORK_PLUGINS"
            )
        else:
            items = (name,)
        for item in items:
            if item not in result:
                result.append(item)
    return result


#: Where a value came from, in precedence order (later wins).
SOURCES = ("default", "file", "environment", "override")

#: ``FLOWORK_*`` environment names that are not settings: the file itself, and names read by
#: the test suite. Commands add the names they read (``Command.environment``).
NOT_SETTINGS = frozenset({"FLOWORK_CONFIG"})
_NOT_SETTING_PREFIXES = ("FLOWORK_TEST_",)

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def redact(text: str) -> str:
    """A value safe to print: the password of any ``scheme://user:password@host`` URL masked."""
    return _URL_PASSWORD.sub(r"\1****@", text)


@dataclass(frozen=True)
class UnknownName:
    """A name given in the environment or the TOML file that no enabled plugin declares."""

    name: str
    source: str  # "environment" or "file"
    suggestion: str | None

    def message(self) -> str:
        where = "environment variable" if self.source == "environment" else "key in FLOWORK_CONFIG"
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"unknown {where} {self.name} (not a setting of the kernel or any enabled plugin){hint}"


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
        self.file = str(toml_path) if toml_path else None
        self._file = load_toml(toml_path)
        self._values: dict[str, Any] = {}
        self._owners: dict[str, str] = {}
        self._sources: dict[str, str] = {}
        self._settings: dict[str, Setting] = {}

    def raw(self, name: str) -> tuple[bool, Any]:
        """(found, value) with precedence overrides > environment > file."""
        found, value, _source = self._lookup(name)
        return found, value

    def _lookup(self, name: str) -> tuple[bool, Any, str]:
        for source, values in (("override", self._overrides), ("environment", self._environ),
                               ("file", self._file)):
            if name in values:
                return True, values[name], source
        return False, None, "default"

    def declare(self, owner: str, settings: Iterable[Setting]) -> None:
        """Resolve and validate ``settings`` on behalf of ``owner`` (kernel or a plugin).

        A name has one owner: a second plugin declaring it is an error (read another plugin's
        setting with ``config[name]`` and list that plugin in ``requires`` instead)."""
        for setting in settings:
            first = self._owners.get(setting.name)
            if first is not None:
                if first == owner:
                    continue
                raise ConfigError(f"setting {setting.name} is declared by both {first} and {owner} "
                                  f"(a setting has one owner; the other plugin should read it)")
            found, value, source = self._lookup(setting.name)
            empty = ValueError(f"is set but empty, which would mean the default "
                               f"({_show(setting.default)}); unset it to use the default, or "
                               f"give a value")
            try:
                if found and isinstance(value, str) and value.strip() == "" and not setting.secret:
                    if not setting.allow_empty:
                        raise empty
                    found, source = False, "default"
                parsed = setting.parse(value) if found else setting.default
                if (found and not setting.allow_empty and not parsed
                        and isinstance(parsed, list | tuple | set | frozenset | dict)):
                    raise empty  # "," or a TOML [] : as empty as ""
                self._values[setting.name] = parsed
            except ValueError as exc:
                raise ConfigError(f"{setting.name} (setting of {owner}): {exc}") from None
            self._owners[setting.name] = owner
            self._sources[setting.name] = source
            self._settings[setting.name] = setting

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"setting {name!r} was not declared by any enabled plugin") from None

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def owner(self, name: str) -> str | None:
        return self._owners.get(name)

    def source(self, name: str) -> str | None:
        """Where the value of a declared setting came from: one of :data:`SOURCES`."""
        return self._sources.get(name)

    def setting(self, name: str) -> Setting | None:
        return self._settings.get(name)

    def items(self) -> list[tuple[str, Any]]:
        return sorted(self._values.items())

    def display(self, name: str) -> str:
        """The value of a declared setting as printed by ``flowork-gateway config``: secrets
        masked, URL passwords masked."""
        setting = self._settings[name]
        value = self._values[name]
        if setting.secret:
            return "(unset)" if value is None else "****"
        return redact(_show(value))

    def unknown_names(self, also_known: Iterable[str] = ()) -> list[UnknownName]:
        """``FLOWORK_*`` environment names and TOML keys no declared setting uses, each with
        the closest declared name (call after every plugin has declared its settings)."""
        known = set(self._values) | set(also_known) | NOT_SETTINGS
        candidates = sorted(self._values)
        found: list[UnknownName] = []
        for source, names in (("environment", [n for n in self._environ
                                               if n.startswith("FLOWORK_")]),
                              ("file", list(self._file))):
            for name in sorted(names):
                if name in known or name.startswith(_NOT_SETTING_PREFIXES):
                    continue
                close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
                found.append(UnknownName(name, source, close[0] if close else None))
        return found


def _show(value: Any) -> str:
    """A parsed value in the form it would be written in the environment."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "(none)"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return ",".join(str(v) for v in items) or "(none)"
    return str(value)
