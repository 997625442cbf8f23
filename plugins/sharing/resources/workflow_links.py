"""Workflow share links: a workflow is (owner, preset name); each link carries a random token
that anyone may resolve (public route) to the link's permission level and names.

Expired, deleted and unknown tokens all answer the same 404 ``invalid_share_token``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import unicodedata
from typing import TYPE_CHECKING, Any

import falcon

from gateway_kernel import Account, utcnow
from gateway_kernel.accounts import lock_account
from gateway_kernel.errors import bad_request, limit_reached, not_found
from gateway_kernel.http import isoformat, parse_uuid, read_json_object, send_json

from .. import errors
from ..models import WorkflowLink

if TYPE_CHECKING:
    from gateway_kernel import Gateway

PERMISSION_LEVELS = ("view", "view-run", "view-edit-run")
DEFAULT_PERMISSION = "view"
MAX_PRESET_NAME = 128
MAX_LINK_NAME = 100
TOKEN_BYTES = 24  # 192 bits; API.md asks for at least 128
# token_urlsafe output is base64url; anything else (or of another size) is refused before
# the database. 22 chars = 16 bytes, the least any version of this plugin issued.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{22,86}")


def _caller(req: falcon.Request) -> Account:
    return req.context.principal.account


def check_preset_name(name: str) -> str:
    """1-128 characters, not blank, no control/format characters, no slashes. Stored as given
    (no trimming, no case folding): it is the key the GUI uses for the preset."""
    if (
        not 1 <= len(name) <= MAX_PRESET_NAME
        or not name.strip()
        or "/" in name
        or "\\" in name
        or any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in name)
    ):
        raise errors.invalid_preset_name(MAX_PRESET_NAME)
    return name


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def share_url(base_url: str, token: str) -> str:
    return f"{base_url}/{token}"


def link_json(link: WorkflowLink, base_url: str) -> dict[str, Any]:
    return {
        "share_id": link.share_id,
        "share_token": link.token,
        "share_url": share_url(base_url, link.token),
        "permission_level": link.permission_level,
        "link_name": link.link_name,
        "created_at": isoformat(link.created_at),
        "expires_at": isoformat(link.expires_at),
    }


def parse_permission(body: dict[str, Any], required: bool) -> str | None:
    value = body.get("permission_level")
    if value is None:
        if required:
            raise bad_request("'permission_level' is required")
        return None
    if value not in PERMISSION_LEVELS:
        raise bad_request(f"'permission_level' must be one of {', '.join(PERMISSION_LEVELS)}")
    return value


def parse_link_name(body: dict[str, Any]) -> str | None:
    """The given link name, or None for absent/null/blank (the caller picks a default)."""
    value = body.get("link_name")
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request("'link_name' must be a string")
    value = value.strip()
    if len(value) > MAX_LINK_NAME:
        raise bad_request(f"'link_name' must be at most {MAX_LINK_NAME} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise bad_request("'link_name' must not contain control characters")
    return value or None


def parse_expiry(value: Any) -> dt.datetime | None:
    """ISO-8601 in the future, as naive UTC; None for null. A naive time is taken as UTC."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise bad_request("'expires_at' must be an ISO-8601 date-time string or null")
    try:
        when = dt.datetime.fromisoformat(value.strip())
        if when.tzinfo is not None:
            # OverflowError: an offset that carries the time past year 9999 or before year 1.
            when = when.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise bad_request("'expires_at' is not a valid ISO-8601 date-time") from None
    if when <= utcnow():
        raise bad_request("'expires_at' must be in the future")
    return when


def owned_link(share_id: str, owner: Account) -> WorkflowLink:
    link = WorkflowLink.get_or_none(
        (WorkflowLink.share_id == parse_uuid(share_id)) & (WorkflowLink.owner == owner.id)
    )
    if link is None:
        raise not_found("Share link not found")
    return link


# -- resources -------------------------------------------------------------------------------


class WorkflowLinksResource:
    """GET/POST /workflows/{preset_name}/shares: the caller's links to one of their presets."""

    def __init__(self, gateway: Gateway, base_url: str, max_links: int = 100) -> None:
        self.gateway = gateway
        self.base_url = base_url
        self.max_links = max_links

    def on_get(self, req: falcon.Request, resp: falcon.Response, preset_name: str) -> None:
        name = check_preset_name(preset_name)
        query = (
            WorkflowLink.select()
            .where((WorkflowLink.owner == _caller(req).id) & (WorkflowLink.preset_name == name))
            .order_by(WorkflowLink.created_at.desc(), WorkflowLink.id.desc())
        )
        send_json(resp, [link_json(link, self.base_url) for link in query])

    def on_post(self, req: falcon.Request, resp: falcon.Response, preset_name: str) -> None:
        name = check_preset_name(preset_name)
        owner = _caller(req)
        body = read_json_object(req)
        permission = parse_permission(body, required=False) or DEFAULT_PERMISSION
        link_name = parse_link_name(body)
        expires_at = parse_expiry(body.get("expires_at"))
        token = secrets.token_urlsafe(TOKEN_BYTES)

        def insert() -> WorkflowLink:
            # Default name "Link N": N = this workflow's number of links once this one exists.
            count = (
                WorkflowLink.select()
                .where((WorkflowLink.owner == owner.id) & (WorkflowLink.preset_name == name))
                .count()
            )
            if count >= self.max_links:
                raise limit_reached("links per workflow", self.max_links,
                                    "FLOWORK_LIMIT_LINKS_PER_WORKFLOW")
            return WorkflowLink.create(
                owner=owner.id,
                preset_name=name,
                token=token,
                token_digest=token_digest(token),
                permission_level=permission,
                link_name=link_name or f"Link {count + 1}",
                expires_at=expires_at,
            )

        with self.gateway.db.atomic():
            # This owner's link creations count each other ("Link N").
            lock_account(self.gateway.db, owner.id)
            link = insert()
        send_json(resp, {**link_json(link, self.base_url), "message": "Share link created"}, 201)


class WorkflowLinkResource:
    """PUT/DELETE /workflow-shares/{share_id}: owner only."""

    def on_put(self, req: falcon.Request, resp: falcon.Response, share_id: str) -> None:
        link = owned_link(share_id, _caller(req))
        body = read_json_object(req)
        link.permission_level = parse_permission(body, required=True)
        fields = [WorkflowLink.permission_level]
        link_name = parse_link_name(body)
        if link_name is not None:
            link.link_name = link_name
            fields.append(WorkflowLink.link_name)
        if "expires_at" in body:
            link.expires_at = parse_expiry(body["expires_at"])
            fields.append(WorkflowLink.expires_at)
        link.save(only=fields)
        send_json(resp, {
            "message": "Share link updated",
            "share_id": link.share_id,
            "permission_level": link.permission_level,
        })

    def on_delete(self, req: falcon.Request, resp: falcon.Response, share_id: str) -> None:
        link = owned_link(share_id, _caller(req))
        WorkflowLink.delete().where(WorkflowLink.id == link.id).execute()
        send_json(resp, {"status": "success", "message": "Share link deleted"})


class ResolveLinkResource:
    """GET /workflow-shares/resolve/{share_token}: public; reveals only the API.md fields."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, share_token: str) -> None:
        if not _TOKEN_RE.fullmatch(share_token):
            raise errors.invalid_share_token()
        row = (
            WorkflowLink.select(WorkflowLink, Account)
            .join(Account)
            .where(WorkflowLink.token_digest == token_digest(share_token))
            .first()
        )
        if row is None or (row.expires_at is not None and row.expires_at <= utcnow()):
            raise errors.invalid_share_token()
        owner = row.owner
        resp.set_header("Cache-Control", "no-store")  # access ends the moment a link goes
        send_json(resp, {
            "permission_level": row.permission_level,
            "workflow_name": row.preset_name,
            "preset_name": row.preset_name,
            "owner_username": owner.username,
            "owner_id": owner.public_address,
            "link_name": row.link_name,
        })
