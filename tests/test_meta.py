"""Service metadata, errors and cross-cutting HTTP behaviour."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import Field, model_validator

from gofannon import hookimpl
from gofannon.app import create_app
from gofannon.kernel import Kernel
from gofannon.models import WireModel
from gofannon.web.common import json_response, parse_body, public


async def test_health_reports_healthy(client: Any) -> None:
    async with client.get("/health") as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "healthy" and body["service"] == "user-service"


async def test_root_is_the_reference_heartbeat(client: Any) -> None:
    async with client.get("/") as r:
        assert await r.json() == {"Hello": "World", "Service": "User-Service"}


async def test_unknown_route_is_a_json_404(client: Any) -> None:
    async with client.get("/no/such/route") as r:
        assert r.status == 404
        assert await r.json() == {"detail": "Not Found"}


async def test_wrong_method_is_a_json_405(client: Any) -> None:
    async with client.delete("/health") as r:
        assert r.status == 405
        assert await r.json() == {"detail": "Method Not Allowed"}


async def test_trailing_slash_redirects_to_the_route(client: Any) -> None:
    async with client.get("/health/") as r:
        assert r.status == 307
        assert r.headers["Location"] == "/health"


async def test_cors_admits_only_the_frontend_origin(client: Any) -> None:
    hdrs = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-thing"}
    async with client.request("OPTIONS", "/agents", headers=hdrs) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert r.headers["Access-Control-Allow-Headers"] == "content-type,x-thing"
    async with client.request("OPTIONS", "/agents", headers={**hdrs, "Origin": "http://evil.example"}) as r:
        assert r.status == 400
    async with client.get("/health", headers={"Origin": "http://localhost:3000"}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    async with client.get("/health", headers={"Origin": "http://evil.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers


# -- request bodies: the size limit and the 422 wire shape ----------------------------------------------


class AllowanceBody(WireModel):
    monthly_allowance: float


class NamedBody(WireModel):
    name: str = Field(pattern=r"^[a-z]+$")
    temperature: float | None = None
    top_p: float | None = None

    @model_validator(mode="after")
    def exclusive(self) -> "NamedBody":
        if self.temperature is not None and self.top_p is not None:
            raise ValueError("Parameters 'temperature' and 'top_p' are mutually exclusive.")
        return self


stored: list[object] = []


@public
async def echo_allowance(request: web.Request) -> web.Response:
    body = await parse_body(request, AllowanceBody)
    stored.append(body)
    return json_response(body.wire())


@public
async def echo_named(request: web.Request) -> web.Response:
    return json_response((await parse_body(request, NamedBody)).wire())


class BodyRoutes:
    @hookimpl
    def register_routes(self, register: Any, settings: Any) -> None:
        register("POST", "/test/allowance", echo_allowance, public=True)
        register("POST", "/test/named", echo_named, public=True)


@pytest.fixture
async def body_app(make_settings: Any) -> Any:
    kernel = Kernel(make_settings(GOFANNON_STORAGE="memory", GOFANNON_MAX_BODY_BYTES="1000"))
    kernel.pm.register(BodyRoutes(), name="body-routes")
    server = TestServer(create_app(kernel=kernel), host="127.0.0.1")
    await server.start_server()
    stored.clear()
    async with aiohttp.ClientSession() as session:
        yield lambda path, **kw: session.post(server.make_url(path), **kw)
    await server.close()


async def test_a_body_over_the_limit_with_content_length_is_413_and_not_stored(body_app: Any) -> None:
    payload = '{"monthlyAllowance": 5, "pad": "' + "x" * 2000 + '"}'
    async with body_app("/test/allowance", data=payload, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
        assert await r.json() == {"detail": "Request body too large (limit 1000 bytes)"}
    assert stored == []


async def test_a_chunked_body_over_the_limit_is_413_and_not_stored(body_app: Any) -> None:
    async def chunks() -> Any:
        yield b'{"monthlyAllowance": 5, "pad": "'
        for _ in range(40):
            yield b"x" * 100
        yield b'"}'

    async with body_app("/test/allowance", data=chunks(), headers={"Content-Type": "application/json"}) as r:
        assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert r.status == 413
        assert (await r.json())["detail"].startswith("Request body too large")
    assert stored == []


async def test_a_body_under_the_limit_is_accepted(body_app: Any) -> None:
    async with body_app("/test/allowance", json={"monthly_allowance": 5}) as r:
        assert r.status == 200
        assert await r.json() == {"monthlyAllowance": 5.0}


async def test_a_missing_field_is_422_in_fastapis_shape(body_app: Any) -> None:
    async with body_app("/test/allowance", json={"monthly": 50}) as r:
        assert r.status == 422
        assert await r.json() == {"detail": [
            {"type": "missing", "loc": ["body", "monthlyAllowance"], "msg": "Field required", "input": {"monthly": 50}},
        ]}


async def test_a_wrong_type_is_422_with_the_input(body_app: Any) -> None:
    async with body_app("/test/allowance", json={"monthlyAllowance": "lots"}) as r:
        assert r.status == 422
        (err,) = (await r.json())["detail"]
    assert err["type"] == "float_parsing" and err["loc"] == ["body", "monthlyAllowance"] and err["input"] == "lots"


async def test_a_model_validator_failure_is_422_with_an_empty_error_ctx(body_app: Any) -> None:
    async with body_app("/test/named", json={"name": "ok", "temperature": 1, "top_p": 0.5}) as r:
        assert r.status == 422
        (err,) = (await r.json())["detail"]
    assert err["type"] == "value_error" and err["loc"] == ["body"]
    assert err["msg"] == "Value error, Parameters 'temperature' and 'top_p' are mutually exclusive."
    assert err["ctx"] == {"error": {}} and err["input"]["top_p"] == 0.5


async def test_a_pattern_failure_carries_the_pattern(body_app: Any) -> None:
    async with body_app("/test/named", json={"name": "NOT OK"}) as r:
        (err,) = (await r.json())["detail"]
    assert err["type"] == "string_pattern_mismatch" and err["ctx"] == {"pattern": "^[a-z]+$"}


async def test_malformed_json_and_an_empty_body_are_422(body_app: Any) -> None:
    async with body_app("/test/allowance", data="{nope", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 422
        (err,) = (await r.json())["detail"]
    assert err["type"] == "json_invalid" and err["loc"] == ["body", 1] and err["msg"] == "JSON decode error"
    async with body_app("/test/allowance", data=b"") as r:
        assert r.status == 422
        assert await r.json() == {"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]}
