"""`flowork-gateway keygen` and `flowork-gateway call` against a real gateway under waitress."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading

import pytest
from waitress.server import create_server

from gateway_kernel import cli
from gateway_plugins.auth_crypto.cli import read_key_file


@pytest.fixture
def served_gateway(gateway):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = create_server(gateway, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.close()


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    for key in ("FLOWORK_PLUGINS", "FLOWORK_CONFIG", "FLOWORK_GATEWAY_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{(tmp_path / 'cli.db').as_posix()}")
    monkeypatch.setenv("FLOWORK_KEY_FILE", str(tmp_path / "keys" / "key"))
    return tmp_path / "keys" / "key"


def test_keygen_writes_an_owner_only_key_and_refuses_to_overwrite(cli_env, capsys):
    assert cli.main(["keygen"]) == 0
    signer = read_key_file(cli_env)
    assert signer.address in capsys.readouterr().out
    if os.name == "posix":
        assert stat.S_IMODE(cli_env.stat().st_mode) == 0o600
    assert cli.main(["keygen"]) == 1  # exists
    assert read_key_file(cli_env).address == signer.address
    assert cli.main(["keygen", "--force"]) == 0
    assert read_key_file(cli_env).address != signer.address


def test_call_signs_and_prints_the_profile(cli_env, served_gateway, capsys):
    assert cli.main(["keygen"]) == 0
    address = read_key_file(cli_env).address
    capsys.readouterr()
    assert cli.main(["call", "GET", "/auth/profile", "--url", served_gateway]) == 0
    profile = json.loads(capsys.readouterr().out)
    assert profile["public_address"] == address and profile["user_id"] == address


def test_call_sends_json_bodies_and_reports_http_errors(cli_env, served_gateway, capsys):
    cli.main(["keygen"])
    capsys.readouterr()
    assert cli.main(["call", "POST", "/user/engines", "--data", '{"name": "from cli"}',
                     "--url", served_gateway]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["name"] == "from cli" and created["raw_token"].startswith("dev_engine_")
    assert cli.main(["call", "POST", "/user/engines", "--data", '{"name": ""}',
                     "--url", served_gateway]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["code"] == "invalid_body" and "HTTP 400" in out.err
    assert cli.main(["call", "GET", "/auth/profile", "--data", "{nope", "--url", served_gateway]) == 2


def test_call_without_a_key_explains_what_to_do(cli_env, capsys):
    assert cli.main(["call", "GET", "/auth/profile"]) == 2
    assert "keygen" in capsys.readouterr().err
