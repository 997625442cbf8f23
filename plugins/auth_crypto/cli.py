"""``flowork-gateway keygen`` and ``flowork-gateway call``: curl with Flowork auth built in.

Published by auth_crypto in the ``flowork_gateway.commands`` entry-point group, so the client
goes with the scheme it signs for. Neither command needs the gateway's settings
(``needs_config=False``); eth_account is imported only when a key is used.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway_kernel.api import Command

if TYPE_CHECKING:
    from .signing import Signer

DEFAULT_URL = "http://127.0.0.1:8000"


def default_key_path() -> Path:
    env = os.environ.get("FLOWORK_KEY_FILE")
    return Path(env) if env else Path.home() / ".config" / "flowork-gateway" / "key"


class KeyFileError(Exception):
    """The key file could not be made owner-only."""


def windows_owner_only_command(path: Path, user: str) -> list[str]:
    """icacls arguments that leave ``user`` as the only account with access to ``path``:
    inherited entries removed (/inheritance:r), the user's grant replaced by full control."""
    return ["icacls", str(path), "/inheritance:r", "/grant:r", f"{user}:(F)"]


def windows_user() -> str:
    """The current Windows account as DOMAIN\\user (icacls resolves it to the account's SID)."""
    user = os.environ.get("USERNAME") or os.getlogin()
    domain = os.environ.get("USERDOMAIN")
    return f"{domain}\\{user}" if domain else user


def restrict_to_owner(path: Path) -> None:
    """Owner-only access: mode 0600 on POSIX, an ACL granting only the current user on Windows."""
    if os.name == "nt":
        command = windows_owner_only_command(path, windows_user())
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        except OSError as exc:
            raise KeyFileError(f"cannot run icacls to restrict {path}: {exc}") from None
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()
            raise KeyFileError(f"icacls could not restrict {path}: "
                               f"{reason[0] if reason else f'exit {done.returncode}'}")
    else:
        os.chmod(path, 0o600)


def write_key_file(path: Path, private_key_hex: str, force: bool = False) -> None:
    """Write the key readable by its owner only: the file is created empty, restricted
    (0600, or the Windows ACL), and only then receives the key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        restrict_to_owner(path)
    except (KeyFileError, OSError):
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(private_key_hex + "\n")


def read_key_file(path: Path) -> Signer:
    from .signing import Signer

    return Signer(path.read_text(encoding="ascii").strip())


def _configure_keygen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None,
                        help="key file (default $FLOWORK_KEY_FILE or ~/.config/flowork-gateway/key)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing key file")


def _run_keygen(gateway: object, args: argparse.Namespace) -> int:
    from .signing import Signer

    path = args.out or default_key_path()
    key = "0x" + secrets.token_hex(32)
    try:
        write_key_file(path, key, force=args.force)
    except FileExistsError:
        print(f"{path} exists; use --force to replace it", file=sys.stderr)
        return 1
    except KeyFileError as exc:
        print(f"flowork-gateway keygen: {exc}; no key written", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"flowork-gateway keygen: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} (owner-only); address {Signer(key).address}")
    return 0


def _configure_call(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", help="HTTP method, e.g. GET")
    parser.add_argument("path", help="path under /api/v1, e.g. /auth/profile")
    parser.add_argument("--data", help="JSON request body")
    parser.add_argument("--engine", help="engine id (X-Flowork-Engine-ID) for proxied calls")
    parser.add_argument("--url", default=os.environ.get("FLOWORK_GATEWAY_URL", DEFAULT_URL),
                        help=f"gateway base URL (default $FLOWORK_GATEWAY_URL or {DEFAULT_URL})")
    parser.add_argument("--key", type=Path, default=None, help="key file (default as keygen)")
    parser.add_argument("--siwe", action="store_true",
                        help="sign a Sign-In with Ethereum message instead of the legacy one")
    parser.add_argument("--domain", default="localhost", help="SIWE domain (with --siwe)")


def _run_call(gateway: object, args: argparse.Namespace) -> int:
    import httpx

    key_path = args.key or default_key_path()
    try:
        signer = read_key_file(key_path)
    except (OSError, ValueError) as exc:
        print(f"cannot read key {key_path}: {exc} (run `flowork-gateway keygen`)", file=sys.stderr)
        return 2
    headers = signer.siwe_headers(domain=args.domain) if args.siwe else signer.headers()
    if args.engine:
        headers["X-Flowork-Engine-ID"] = args.engine
    content = None
    if args.data is not None:
        try:
            json.loads(args.data)
        except ValueError:
            print("--data is not valid JSON", file=sys.stderr)
            return 2
        content = args.data.encode()
        headers["Content-Type"] = "application/json"
    path = args.path if args.path.startswith("/api/") else "/api/v1/" + args.path.lstrip("/")
    try:
        with httpx.Client(trust_env=False, timeout=30) as client:
            response = client.request(args.method.upper(), args.url.rstrip("/") + path,
                                      headers=headers, content=content)
    except httpx.HTTPError as exc:
        print(f"request failed: {exc}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        sys.stdout.write(response.text)
    if not response.is_success:
        print(f"HTTP {response.status_code}", file=sys.stderr)
    return 0 if response.is_success else 1


COMMANDS = [
    Command("keygen", "write a new private key file (owner-only permissions)",
            _configure_keygen, _run_keygen, needs_database=False, needs_config=False,
            environment=("FLOWORK_KEY_FILE",)),
    Command("call", "sign and send a request to a gateway, print the JSON answer",
            _configure_call, _run_call, needs_database=False, needs_config=False,
            environment=("FLOWORK_KEY_FILE", "FLOWORK_GATEWAY_URL")),
]
