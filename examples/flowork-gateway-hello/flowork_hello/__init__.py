"""An example plugin: ``GET /api/v1/hello`` greets the signed-in user and counts visits."""

from __future__ import annotations

import falcon
import peewee

from gateway_kernel import (
    BaseModel,
    GatewayPlugin,
    Migration,
    Route,
    Setting,
    create_tables,
    hookimpl,
)
from gateway_kernel.config import as_str
from gateway_kernel.db import utcnow
from gateway_kernel.http import send_json
from gateway_kernel.openapi import json_response, op


class Visit(BaseModel):
    """One row per account: how often it said hello. Table names start with the plugin's."""

    account_id = peewee.IntegerField(unique=True)
    count = peewee.IntegerField(default=0)
    last_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "hello_visit"


def _add_last_at_index(db: peewee.Database) -> None:
    # A second migration, to show how a plugin evolves its schema after shipping.
    db.execute_sql("CREATE INDEX IF NOT EXISTS hello_visit_last_at ON hello_visit (last_at)")


class HelloResource:
    def __init__(self, plugin: HelloPlugin) -> None:
        self.plugin = plugin

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        account = req.context.principal.account
        Visit.insert(account_id=account.id, count=1).on_conflict(
            conflict_target=[Visit.account_id],
            update={Visit.count: Visit.count + 1, Visit.last_at: utcnow()},
        ).execute()
        visits = Visit.get(Visit.account_id == account.id).count
        send_json(resp, {"message": f"{self.plugin.greeting}, {account.username}!", "visits": visits})


class EchoSocket:
    """ASGI wrapper: a WebSocket echo at ``/api/v1/hello/echo``; everything else (HTTP,
    lifespan, other sockets) goes to the gateway's app."""

    PATH = "/api/v1/hello/echo"

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "websocket" or scope["path"] != self.PATH:
            await self.app(scope, receive, send)
            return
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] != "websocket.receive":
                return
            if event.get("text") is not None:
                await send({"type": "websocket.send", "text": event["text"]})
            else:
                await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})


class HelloPlugin(GatewayPlugin):
    name = "hello"
    version = "0.1.0"
    description = "Greets signed-in users (example third-party plugin)"
    settings = (Setting("HELLO_GREETING", as_str, "Hello", "the greeting word"),)

    def __init__(self) -> None:
        self.greeting = "Hello"

    @hookimpl
    def gateway_configure(self, gateway) -> None:
        self.greeting = gateway.config["HELLO_GREETING"]

    @hookimpl
    def gateway_models(self) -> list[type[BaseModel]]:
        return [Visit]

    @hookimpl
    def gateway_migrations(self) -> list[Migration]:
        return [create_tables("0001_visit", Visit), Migration("0002_last_at_index", _add_last_at_index)]

    @hookimpl
    def gateway_routes(self, gateway) -> list[Route]:
        # "user": any enabled scheme that produces user principals (auth_crypto by default).
        return [Route("/hello", HelloResource(self), "user")]

    @hookimpl
    def gateway_asgi_middleware(self, gateway, app):
        # WebSocket on the REST port (default server only): wrap the gateway's ASGI app.
        return EchoSocket(app)

    @hookimpl
    def gateway_openapi(self, gateway) -> dict:
        schema = {"type": "object", "required": ["message", "visits"],
                  "properties": {"message": {"type": "string"}, "visits": {"type": "integer"}}}
        return {"paths": {"/hello": {"get": op("Greet the caller", "user",
                                                {200: json_response(schema)}, tags=["hello"])}}}
