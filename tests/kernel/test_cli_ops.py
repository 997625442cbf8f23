"""What an operator meets first: settings, the command line and operational errors.

Through real ``flowork-gateway`` processes (the console script of this venv), except where a
fault has to be simulated inside the process (a missing driver), which runs a ``python -c``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway_kernel import Command, cli, hookimpl
from gateway_kernel.config import Config, ConfigError, Setting, as_int, as_seconds
from gateway_plugins.auth_crypto import cli as keycli
from tests.support.procs import free_port, gateway_executable

TIMEOUT_S = 120  # generous: the machine is shared with other test runs
SECRET = "s3cret-" + "k" * 40
_GATEWAY_ENV_PREFIXES = ("FLOWORK_", "DATABASE_URL", "GATEWAY_SECRET_TOKEN")


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_GATEWAY_ENV_PREFIXES)}
    env["DATABASE_URL"] = f"sqlite:///{(tmp_path / 'gw.db').as_posix()}"
    env.update(settings)
    return env


def run(tmp_path: Path, *args: str, cwd: Path | None = None, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run([gateway_executable(), *args], env=environment(tmp_path, **settings),
                          cwd=cwd or tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)


def run_python(tmp_path: Path, code: str, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=environment(tmp_path, **settings),
                          cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    """The process failed with ``code`` and said why in exactly one line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def config_rows(stdout: str) -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4 and not line.startswith("("):
            rows[parts[0]] = (" ".join(parts[1:-2]), parts[-2], parts[-1])
    return rows


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("FLOWORK_DB_POOL_SIZE", "abc", "expected an integer"),
    ("FLOWORK_DB_POOL_SIZE", "5.7", "expected an integer"),
    ("FLOWORK_PROXY_CONNECT_TIMEOUT_S", "nan", "number of seconds"),
    ("FLOWORK_PROXY_READ_TIMEOUT_S", "inf", "number of seconds"),
    ("FLOWORK_ENGINE_ONLINE_S", "-5", "at least"),
    ("FLOWORK_CLAIM_TTL_S", "1e9", "at most"),
    ("FLOWORK_CORS_ORIGINS", "", "empty"),
    ("FLOWORK_CORS_ORIGINS", "example.com/path", "not an origin"),
    ("FLOWORK_ENGINE_NETWORKS", " ", "empty"),
    ("FLOWORK_ENGINE_NETWORKS", ",", "empty"),
    ("FLOWORK_SIWE_CHAIN_IDS", "", "empty"),
    ("FLOWORK_PLUGINS", "", "empty"),
    ("GATEWAY_SECRET_TOKEN", "short", "at least 32 characters"),
])
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(tmp_path, name, value, reason):
    line = one_line_error(run(tmp_path, "config", **{name: value}), 2)
    assert name in line and reason in line
    if name == "GATEWAY_SECRET_TOKEN":
        assert value not in line  # a secret is never echoed, even a bad one


def test_config_prints_every_setting_with_source_owner_and_masked_secrets(tmp_path):
    pytest.importorskip("psycopg2")  # a postgresql:// URL needs its driver even unconnected
    toml = tmp_path / "gateway.toml"
    toml.write_text('FLOWORK_CLAIM_TTL_S = 60.5\n[gateway]\nFLOWORK_PROXY_TIMEOUT_S = 30\n')
    result = run(tmp_path, "config", FLOWORK_CONFIG=str(toml), GATEWAY_SECRET_TOKEN=SECRET,
                 DATABASE_URL="postgresql://gw:db-password@127.0.0.1:1/gw",
                 FLOWORK_DB_POOL_TIMEOUT_S="1.5")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and "db-password" not in result.stdout
    rows = config_rows(result.stdout)
    assert rows["GATEWAY_SECRET_TOKEN"] == ("****", "environment", "auth_internal")
    assert rows["DATABASE_URL"] == ("postgresql://gw:****@127.0.0.1:1/gw", "environment", "kernel")
    assert rows["FLOWORK_CLAIM_TTL_S"] == ("60.5", "file", "engines")
    assert rows["FLOWORK_PROXY_TIMEOUT_S"] == ("30", "file", "proxy")
    assert rows["FLOWORK_DB_POOL_TIMEOUT_S"] == ("1.5", "environment", "kernel")
    assert rows["FLOWORK_PROXY_CACHE_BYTES"] == ("33554432", "default", "proxy")
    assert rows["FLOWORK_CORS_ORIGINS"] == ("*", "default", "kernel")
    assert f"FLOWORK_CONFIG={toml}" in result.stdout


def test_config_shows_the_default_database_and_an_unset_secret(tmp_path):
    env = environment(tmp_path)
    del env["DATABASE_URL"]
    result = subprocess.run([gateway_executable(), "config"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    rows = config_rows(result.stdout)
    assert rows["GATEWAY_SECRET_TOKEN"] == ("(unset)", "default", "auth_internal")
    assert rows["DATABASE_URL"][0].endswith("/data/flowork-gateway.db")


def test_unknown_names_are_reported_with_the_closest_setting(tmp_path):
    toml = tmp_path / "gateway.toml"
    toml.write_text("FLOWORK_PROXY_TIMEOUT = 30\n")
    settings = {"FLOWORK_CONFIG": str(toml), "FLOWORK_DBPOOL_SIZE": "5",
                "FLOWORK_KEY_FILE": str(tmp_path / "key")}  # read by keygen/call: known
    result = run(tmp_path, "config", **settings)
    assert result.returncode == 0  # a warning: a stale variable must not stop a gateway
    assert ("unknown environment variable FLOWORK_DBPOOL_SIZE" in result.stderr
            and "did you mean FLOWORK_DB_POOL_SIZE?" in result.stderr)
    assert ("unknown key in FLOWORK_CONFIG FLOWORK_PROXY_TIMEOUT" in result.stderr
            and "did you mean FLOWORK_PROXY_TIMEOUT_S?" in result.stderr)
    assert "FLOWORK_KEY_FILE" not in result.stderr
    check = run(tmp_path, "config", "--check", **settings)
    assert check.returncode == 2 and check.stdout == ""
    assert len(check.stderr.strip().splitlines()) == 2
    assert run(tmp_path, "config", "--check").returncode == 0


def test_every_duration_follows_one_rule(make_gateway):
    """`_S` settings: fractions, no nan/inf, never negative, bounded; integers refuse 5.7."""
    config = make_gateway().config
    for name, _value in config.items():
        parse = config.setting(name).parse
        if name.endswith("_S"):
            assert getattr(parse, "kind", None) == "a number of seconds", name
            for bad in ("nan", "inf", "-1", "1e12", "abc"):
                with pytest.raises(ValueError):
                    parse(bad)
        elif getattr(parse, "kind", None) == "an integer":
            for bad in ("5.7", 5.7, "nan", True):
                with pytest.raises(ValueError):
                    parse(bad)
    assert as_seconds(0, 10)("1.5") == 1.5 and as_seconds(0, 10)(2) == 2.0
    assert as_int()(7.0) == 7 and as_int()(" 12 ") == 12


def test_an_empty_toml_list_does_not_widen_access(tmp_path):
    toml = tmp_path / "gateway.toml"
    toml.write_text("FLOWORK_SIWE_CHAIN_IDS = []\n")
    config = Config(environ={"FLOWORK_CONFIG": str(toml)})
    with pytest.raises(ConfigError, match=r"FLOWORK_SIWE_CHAIN_IDS .*empty"):
        config.declare("auth_crypto", [Setting("FLOWORK_SIWE_CHAIN_IDS", lambda v: frozenset(v),
                                                frozenset(), allow_empty=False)])


def test_a_setting_has_one_owner():
    config = Config(environ={})
    config.declare("one", [Setting("SHARED_X", as_int(), 1)])
    config.declare("one", [Setting("SHARED_X", as_int(), 1)])  # the same owner again: fine
    with pytest.raises(ConfigError, match="SHARED_X is declared by both one and two"):
        config.declare("two", [Setting("SHARED_X", as_int(), 1)])


# -- the command line ------------------------------------------------------------------------

_HEAVY = ("falcon", "peewee", "eth_account", "eth_keys", "httpx", "waitress", "stevedore",
          "gateway_kernel.app", "gateway_plugins.auth_crypto.plugin", "gateway_plugins.engines.plugin",
          "gateway_plugins.killswitch.plugin")

_IMPORTED_AFTER = """
import json, sys
from gateway_kernel import Command, cli, hookimpl
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def imported_by(tmp_path: Path, *args: str, **settings: str) -> tuple[dict, str]:
    code = _IMPORTED_AFTER.format(heavy=_HEAVY)
    result = subprocess.run([sys.executable, "-c", code, *args], env=environment(tmp_path, **settings),
                            cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    return json.loads(result.stderr.strip().splitlines()[-1]), result.stdout


def test_help_imports_nothing_heavy_creates_nothing_and_lists_plugin_commands(tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    report, out = imported_by(work, "--help")
    assert report == {"code": 0, "heavy": []}
    for command in ("serve", "migrate", "config", "plugins", "routes", "keygen", "call", "components"):
        assert f"    {command}" in out
    assert list(work.iterdir()) == []  # no ./data/, no database


def test_client_commands_need_neither_settings_nor_the_server_stack(tmp_path):
    report, out = imported_by(tmp_path, "keygen", "--out", str(tmp_path / "key"),
                              FLOWORK_DB_POOL_SIZE="abc")  # a broken config does not matter
    assert report["code"] == 0 and "address 0x" in out
    assert not {"falcon", "peewee", "waitress", "gateway_kernel.app"} & set(report["heavy"])


def test_every_option_has_help_with_its_default(tmp_path):
    result = run(tmp_path, "serve", "--help")
    assert result.returncode == 0
    for text in ("--host", "default 127.0.0.1", "--port", "default 8000", "--threads", "default 8"):
        assert text in result.stdout
    for command in ("plugins", "config", "keygen", "call", "components"):
        help_text = run(tmp_path, command, "--help")
        assert help_text.returncode == 0 and "usage: flowork-gateway " + command in help_text.stdout


def test_plugin_commands_are_listed_when_the_configuration_is_broken(tmp_path):
    bad_toml = tmp_path / "broken.toml"
    bad_toml.write_text("this is = = not toml")
    for settings in ({"FLOWORK_DB_POOL_SIZE": "abc"}, {"FLOWORK_CONFIG": str(bad_toml)}):
        listing = run(tmp_path, "--help", **settings)
        assert listing.returncode == 0 and "keygen" in listing.stdout and "components" in listing.stdout
        # ... and the error shows when a command that needs the configuration runs
        line = one_line_error(run(tmp_path, "components", "list", **settings), 2)
        assert "configuration error" in line
        assert ("FLOWORK_DB_POOL_SIZE" in line) or ("not valid TOML" in line)


def test_disabled_plugins_commands_are_not_offered(tmp_path):
    listing = run(tmp_path, "--help", FLOWORK_PLUGINS="auth_internal")
    assert "keygen" not in listing.stdout and "components" not in listing.stdout


def test_a_closed_pipe_ends_quietly(tmp_path):
    proc = subprocess.Popen([gateway_executable(), "plugins"], env=environment(tmp_path),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line (`| head -0`)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err


def test_plugins_shows_each_plugins_settings(tmp_path):
    result = run(tmp_path, "plugins")
    assert result.returncode == 0
    blocks = result.stdout.split("\n\n") if "\n\n" in result.stdout else [result.stdout]
    text = "".join(blocks)
    assert "  settings: FLOWORK_PUBLIC_ENGINE_URL, FLOWORK_PROXY_MAX_UPLOAD_BYTES" in text
    assert "  settings: GATEWAY_SECRET_TOKEN" in text


# -- operational errors ----------------------------------------------------------------------


def test_postgres_url_without_the_driver_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['psycopg2'] = None\n"  # the import now fails
            "from gateway_kernel.cli import main; sys.exit(main(['migrate']))")
    result = run_python(tmp_path, code, DATABASE_URL="postgresql://postgres@127.0.0.1:5432/x")
    line = one_line_error(result, 2)
    assert "pip install 'flowork-gateway[postgres]'" in line and "DATABASE_URL" in line


def test_unreachable_database_names_the_host_and_port(tmp_path):
    pytest.importorskip("psycopg2")
    port = free_port()  # bound and released: nothing listens there
    result = run(tmp_path, "migrate", DATABASE_URL=f"postgresql://gw:db-password@127.0.0.1:{port}/gw")
    line = one_line_error(result, 1)
    assert f"cannot connect to the database at 127.0.0.1:{port}" in line
    assert "db-password" not in result.stderr


def test_a_missing_sqlite_folder_is_not_created(tmp_path):
    target = tmp_path / "missing" / "deeper" / "gw.db"
    line = one_line_error(run(tmp_path, "migrate", DATABASE_URL=f"sqlite:///{target.as_posix()}"), 2)
    assert "does not exist" in line and str(target.parent) in line
    assert not (tmp_path / "missing").exists()


def test_only_the_default_data_folder_is_created(tmp_path):
    env = environment(tmp_path)
    del env["DATABASE_URL"]
    result = subprocess.run([gateway_executable(), "migrate"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "flowork-gateway.db").is_file()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions that bind the user (root ignores them)")
def test_an_unwritable_sqlite_folder_is_one_line(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = one_line_error(run(tmp_path, "migrate",
                                  DATABASE_URL=f"sqlite:///{(folder / 'gw.db').as_posix()}"), 2)
    finally:
        folder.chmod(0o755)
    assert "not writable" in line


def test_port_in_use_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(tmp_path, "serve", "--port", str(port))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in result.stderr


def test_listen_errors_map_to_one_line():
    denied = OSError(errno.EACCES, "Permission denied")
    assert "permission denied" in cli.listen_error_message(denied, "127.0.0.1", 80)
    unknown = socket.gaierror(-2, "Name or service not known")
    assert "unknown host 'nohost.invalid'" in cli.listen_error_message(unknown, "nohost.invalid", 1)
    assert cli.listen_error_message(OSError(errno.EIO, "I/O error"), "127.0.0.1", 1) is None


# -- the key file ----------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_keygen_force_makes_an_existing_key_file_owner_only(tmp_path):
    path = tmp_path / "key"
    path.write_text("old")
    path.chmod(0o644)
    result = run(tmp_path, "keygen", "--out", str(path), "--force")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_windows_acl_command_grants_only_the_current_user(tmp_path):
    path = tmp_path / "key"
    assert keycli.windows_owner_only_command(path, "HOST\\ada") == [
        "icacls", str(path), "/inheritance:r", "/grant:r", "HOST\\ada:(F)"]


def test_on_windows_keygen_sets_the_acl_before_writing_the_key(tmp_path, monkeypatch):
    calls = []

    def fake_run(command, **kwargs):
        calls.append((command, path.read_text()))  # the file is still empty here
        return subprocess.CompletedProcess(command, 0, "processed 1 files", "")

    path = tmp_path / "key"
    monkeypatch.setenv("USERNAME", "ada")
    monkeypatch.setenv("USERDOMAIN", "HOST")
    monkeypatch.setattr(keycli.subprocess, "run", fake_run)
    monkeypatch.setattr(keycli.os, "name", "nt")
    keycli.write_key_file(path, "0x" + "11" * 32)
    monkeypatch.undo()
    assert calls == [(["icacls", str(path), "/inheritance:r", "/grant:r", "HOST\\ada:(F)"], "")]
    assert path.read_text().strip() == "0x" + "11" * 32


def test_on_windows_a_failed_acl_leaves_no_key_behind(tmp_path, monkeypatch):
    def failing_run(command, **kwargs):
        return subprocess.CompletedProcess(command, 5, "", "Access is denied.")

    path = tmp_path / "key"
    monkeypatch.setenv("USERNAME", "ada")
    monkeypatch.setattr(keycli.subprocess, "run", failing_run)
    monkeypatch.setattr(keycli.os, "name", "nt")
    with pytest.raises(keycli.KeyFileError, match="Access is denied"):
        keycli.write_key_file(path, "0x" + "22" * 32)
    monkeypatch.undo()
    assert not path.exists()


# -- commands from the gateway_commands hook -------------------------------------------------


class HookCommandPlugin:
    """A plugin that adds its command through the hook, not the entry-point group."""

    name = "hookcmd"
    version = "1"
    requires = ()
    settings = ()

    @hookimpl
    def gateway_commands(self) -> list[Command]:
        def configure(parser):
            parser.add_argument("--word", default="hi", help="what to say (default hi)")

        def run(gateway, args):
            print(f"{args.word} from {sorted(gateway.plugins)}")
            return 3

        return [Command("say", "say a word", configure, run, needs_database=False)]


def test_hook_commands_run_once_the_configuration_loads(tmp_path, monkeypatch, capsys):
    from gateway_kernel import app

    real = app.create_gateway
    monkeypatch.setattr(app, "create_gateway", lambda: real(
        environ={}, settings={"FLOWORK_PLUGINS": "none",
                              "DATABASE_URL": f"sqlite:///{(tmp_path / 'h.db').as_posix()}"},
        extra_plugins=[HookCommandPlugin()]))
    assert cli.main(["say", "--word", "hello"]) == 3
    assert capsys.readouterr().out == "hello from ['hookcmd']\n"


def test_every_option_of_every_command_has_help(monkeypatch):
    import argparse

    monkeypatch.delenv("FLOWORK_PLUGINS", raising=False)
    monkeypatch.delenv("FLOWORK_CONFIG", raising=False)
    parser = cli._build_parser(cli._entry_point_commands(os.environ))
    missing = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{where} {action.dest}")

    walk(parser, "flowork-gateway")
    assert not missing, f"options without help: {missing}"


def test_an_sqlite_folder_this_user_cannot_write_is_refused(tmp_path, monkeypatch):
    """Runs everywhere (root ignores modes, so the subprocess test above is skipped there)."""
    from gateway_kernel.db import connect as db

    monkeypatch.setattr(db.os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match="is not writable by this user"):
        db.open_database(f"sqlite:///{(tmp_path / 'gw.db').as_posix()}")
