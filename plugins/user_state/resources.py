"""Per-user GUI state: ``GET/PUT /user/state/{key}`` (API.md).

Keys are ``[a-z0-9_]{1,64}``; a value is any JSON document up to 64 KiB, kept as canonical
JSON text and served back without re-parsing. ``favorite_presets`` must be an array of
strings (the GUI relies on that shape). An unset key reads as ``[]``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import falcon

from gateway_kernel import Gateway, utcnow
from gateway_kernel.accounts import lock_account
from gateway_kernel.errors import bad_request
from gateway_kernel.http import read_json, send_json

from . import errors
from .models import UserState

MAX_VALUE_BYTES = 64 * 1024
KEY = re.compile(r"^[a-z0-9_]{1,64}$")
EMPTY = b"[]"


def check_key(key: str) -> str:
    if not KEY.match(key):
        raise errors.invalid_key()
    return key


def validate_value(key: str, value: Any) -> str:
    """Canonical JSON text of ``value``, or 400 ``invalid_body``."""
    if key == "favorite_presets" and not (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    ):
        raise bad_request("'favorite_presets' must be an array of strings")
    try:
        # allow_nan=False: NaN/Infinity parse in Python but are not JSON for the GUI.
        # ASCII escapes keep lone surrogates ("\\ud800") storable on every backend.
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise bad_request("Value must be plain JSON (no NaN or Infinity)") from None


class UserStateItem:
    """GET/PUT /user/state/{key}; at most ``max_keys`` keys per user."""

    def __init__(self, gateway: Gateway, max_keys: int) -> None:
        self.gateway = gateway
        self.max_keys = max_keys

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        check_key(key)
        stored = (
            UserState.select(UserState.value)
            .where((UserState.account == req.context.principal.account.id)
                   & (UserState.key == key))
            .scalar()
        )
        resp.content_type = falcon.MEDIA_JSON
        resp.data = stored.encode() if stored is not None else EMPTY

    def on_put(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        check_key(key)
        text = validate_value(key, read_json(req, limit=MAX_VALUE_BYTES))
        account_id = req.context.principal.account.id
        mine = UserState.account == account_id
        with self.gateway.db.atomic():
            # A new key counts against the limit; the lock makes concurrent new keys of one
            # user count each other. Overwriting a key never does.
            lock_account(self.gateway.db, account_id)
            if (
                not UserState.select().where(mine & (UserState.key == key)).exists()
                and UserState.select().where(mine).count() >= self.max_keys
            ):
                raise errors.too_many_keys(self.max_keys)
            UserState.insert(
                account=account_id, key=key, value=text, updated_at=utcnow()
            ).on_conflict(
                conflict_target=[UserState.account, UserState.key],
                update={UserState.value: text, UserState.updated_at: utcnow()},
            ).execute()
        send_json(resp, {"status": "success", "message": f"State '{key}' saved"})
