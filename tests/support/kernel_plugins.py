"""Small plugins used by the kernel tests (registered with ``extra_plugins=[...]``)."""

from __future__ import annotations

import falcon
import peewee

from gateway_kernel import (
    AuthScheme,
    BaseModel,
    GatewayError,
    GatewayPlugin,
    Migration,
    Principal,
    Route,
    Setting,
    create_tables,
    hookimpl,
)
from gateway_kernel.config import as_int
from gateway_kernel.http import read_json_object, send_json


class Note(BaseModel):
    text = peewee.CharField(max_length=100)

    class Meta:
        table_name = "notes_note"


class NotesResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, {"notes": [n.text for n in Note.select().order_by(Note.id)],
                         "kind": req.context.principal and req.context.principal.kind})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json_object(req)
        Note.create(text=str(body.get("text", ""))[:100])
        send_json(resp, {"ok": True}, 201)


class BoomResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("secret internals must not leak")


class NotesPlugin(GatewayPlugin):
    name = "notes"
    version = "1.2.3"
    settings = (Setting("NOTES_LIMIT", as_int(1, 10), 5),)

    def __init__(self, migrations: list[Migration] | None = None, auth: str = "public") -> None:
        self.migrations = migrations
        self.auth = auth
        self.configured_limit = None

    @hookimpl
    def gateway_configure(self, gateway) -> None:
        self.configured_limit = gateway.config["NOTES_LIMIT"]

    @hookimpl
    def gateway_models(self) -> list:
        return [Note]

    @hookimpl
    def gateway_migrations(self) -> list[Migration]:
        return self.migrations if self.migrations is not None else [create_tables("0001", Note)]

    @hookimpl
    def gateway_routes(self, gateway) -> list[Route]:
        return [Route("/notes", NotesResource(), self.auth), Route("/boom", BoomResource(), "public")]


class ClashPlugin(GatewayPlugin):
    name = "clash"
    version = "1"

    @hookimpl
    def gateway_routes(self, gateway) -> list[Route]:
        return [Route("/notes", NotesResource(), "public")]


class MisspeltPlugin(GatewayPlugin):
    name = "misspelt"
    version = "1"

    @hookimpl
    def gateway_route(self, gateway) -> list[Route]:
        return []


class NeedsMissingPlugin(GatewayPlugin):
    name = "needy"
    version = "1"
    requires = ("not_enabled_plugin",)


class HeaderScheme(AuthScheme):
    """A user scheme reading one header: value 'good' passes, anything else is a 401."""

    kind = "user"

    def __init__(self, name: str, header: str) -> None:
        self.name = name
        self.header = header
        self.headers = (header,)

    def authenticate(self, req: falcon.Request) -> Principal | None:
        value = req.get_header(self.header)
        if value is None:
            return None
        if value != "good":
            raise GatewayError(401, f"bad_{self.name}", f"{self.header} is wrong")
        return Principal(kind="user", scheme=self.name)

    def missing(self) -> Exception:
        return GatewayError(401, f"missing_{self.name}", f"{self.header} required")


class TwoSchemesPlugin(GatewayPlugin):
    name = "two_schemes"
    version = "1"

    @hookimpl
    def gateway_auth_schemes(self, gateway) -> list[AuthScheme]:
        return [HeaderScheme("alpha", "X-Alpha"), HeaderScheme("beta", "X-Beta")]


class LifecyclePlugin(GatewayPlugin):
    """Records lifecycle calls, adds a middleware and a CORS header, vetoes one principal."""

    name = "lifecycle"
    version = "1"

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    def gateway_startup(self, gateway) -> None:
        self.events.append("startup")

    @hookimpl
    def gateway_shutdown(self, gateway) -> None:
        self.events.append("shutdown")

    @hookimpl
    def gateway_middleware(self, gateway) -> list[object]:
        plugin = self

        class Stamp:
            def process_response(self, req, resp, resource, req_succeeded) -> None:
                plugin.events.append("middleware")
                resp.set_header("X-Stamped", "yes")

        return [Stamp()]

    @hookimpl
    def gateway_cors_headers(self) -> list[str]:
        return ["X-Lifecycle"]

    @hookimpl
    def gateway_authorize(self, gateway, principal, req) -> None:
        if req.get_header("X-Beta") == "good" and req.path.endswith("/notes"):
            raise GatewayError(404, "not_found", "vetoed")
