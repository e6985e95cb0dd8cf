"""A small real HTTP server on 127.0.0.1 that serves API specs (and things that are not specs) and implements
the tiny "petstore" API the specs describe, so generated agents can call it."""

from __future__ import annotations

import json
import socket
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

PETSTORE_3: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Pet Store", "version": "1.0.0"},
    "servers": [{"url": "{base}"}],
    "paths": {
        "/pets": {
            "get": {"operationId": "listPets", "summary": "List all pets",
                    "parameters": [{"name": "limit", "in": "query", "required": False,
                                    "schema": {"type": "integer"}, "description": "How many to return"}],
                    "responses": {"200": {"description": "ok"}}},
            "post": {"operationId": "createPet", "summary": "Create a pet",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/NewPet"}}}},
                     "responses": {"201": {"description": "created"}}},
        },
        "/pets/{petId}": {
            "parameters": [{"name": "petId", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"summary": "Info for a pet", "responses": {"200": {"description": "ok"}}},
        },
    },
    "components": {"schemas": {"NewPet": {"type": "object", "required": ["name"],
                                          "properties": {"name": {"type": "string"}, "tag": {"type": "string"}}}}},
}

SWAGGER_2_YAML = """\
swagger: "2.0"
info:
  title: Weather
  version: "2"
host: weather.example.com
basePath: /v2
schemes: [https]
paths:
  /forecast/{city}:
    get:
      operationId: getForecast
      summary: Forecast for a city
      parameters:
        - name: city
          in: path
          required: true
          type: string
        - name: days
          in: query
          type: integer
      responses:
        "200":
          description: ok
  /alerts:
    post:
      summary: Subscribe to alerts
      parameters:
        - name: body
          in: body
          required: true
          schema:
            type: object
            properties:
              email: {type: string}
      responses:
        "200":
          description: ok
"""

HTML_PAGE = "<!doctype html><html><head><title>Docs</title></head><body><h1>Our API</h1></body></html>"


class SpecServer:
    """Serves /openapi.json, /swagger.yaml, /page.html, /plain.json (JSON, not a spec), /missing (404),
    /broken (500), /moved (302 to /openapi.json), /to-metadata (302 to 169.254.169.254) and the pet API."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        app = web.Application()
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_get("/swagger.yaml", lambda r: web.Response(text=SWAGGER_2_YAML, content_type="application/yaml"))
        app.router.add_get("/page.html", lambda r: web.Response(text=HTML_PAGE, content_type="text/html"))
        app.router.add_get("/plain.json", lambda r: web.json_response({"hello": "world"}))
        app.router.add_get("/missing", lambda r: web.Response(status=404, text="no such spec"))
        app.router.add_get("/broken", lambda r: web.Response(status=500, text="boom"))
        app.router.add_get("/moved", self.moved)
        app.router.add_get("/to-metadata", self.to_metadata)
        app.router.add_get("/pets", self.list_pets)
        app.router.add_post("/pets", self.create_pet)
        self.pets: list[dict[str, Any]] = [{"id": "1", "name": "Rex"}]
        self.server = TestServer(app, host="127.0.0.1", port=port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def openapi_doc(self) -> dict[str, Any]:
        doc = json.loads(json.dumps(PETSTORE_3))
        doc["servers"][0]["url"] = self.base
        return doc

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.openapi_doc())

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/openapi.json")

    async def to_metadata(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def list_pets(self, request: web.Request) -> web.Response:
        return web.json_response(self.pets)

    async def create_pet(self, request: web.Request) -> web.Response:
        pet = dict(await request.json(), id=str(len(self.pets) + 1))
        self.pets.append(pet)
        return web.json_response(pet, status=201)

    async def __aenter__(self) -> "SpecServer":
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()
