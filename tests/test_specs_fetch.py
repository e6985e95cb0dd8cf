"""POST /specs/fetch against a real local server: specs are recognised, everything else is a clear error."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

import pytest
import yaml
from fakes.openapi_server import SWAGGER_2_YAML, SpecServer
from gofannon_plugins.tools.openapi import parser


@pytest.fixture
async def specs() -> AsyncIterator[SpecServer]:
    async with SpecServer() as server:
        yield server


@pytest.fixture
async def alice(serve: Callable[..., Any]) -> Any:
    client = await serve()
    await client.login("alice")
    return client


async def fetch(client: Any, url: str) -> tuple[int, Any]:
    async with client.post("/specs/fetch", json={"url": url}) as r:
        return r.status, await r.json()


async def test_openapi_json_spec_is_returned_with_its_name(alice: Any, specs: SpecServer) -> None:
    status, body = await fetch(alice, specs.url("/openapi.json"))
    assert status == 200, body
    assert body["name"] == "openapi.json"
    assert json.loads(body["content"])["info"]["title"] == "Pet Store"


async def test_swagger_2_yaml_spec_is_returned_verbatim(alice: Any, specs: SpecServer) -> None:
    status, body = await fetch(alice, specs.url("/swagger.yaml"))
    assert status == 200, body
    assert body == {"name": "swagger.yaml", "content": SWAGGER_2_YAML}


async def test_redirect_is_followed_and_named_after_the_requested_url(alice: Any, specs: SpecServer) -> None:
    status, body = await fetch(alice, specs.url("/moved"))
    assert status == 200, body
    assert body["name"] == "moved" and "Pet Store" in body["content"]


@pytest.mark.parametrize("path", ["/page.html", "/plain.json"])
async def test_a_page_that_is_not_a_spec_is_a_422(path: str, alice: Any, specs: SpecServer) -> None:
    status, body = await fetch(alice, specs.url(path))
    assert status == 422
    assert "not an OpenAPI 3.x or Swagger 2.0 spec" in body["detail"]


@pytest.mark.parametrize("path,code", [("/missing", "404"), ("/broken", "500")])
async def test_http_errors_are_a_502_with_the_remote_status(path: str, code: str, alice: Any,
                                                            specs: SpecServer) -> None:
    status, body = await fetch(alice, specs.url(path))
    assert status == 502
    assert f"answered HTTP {code}" in body["detail"]


async def test_redirect_to_cloud_metadata_is_refused(alice: Any, specs: SpecServer) -> None:
    status, body = await fetch(alice, specs.url("/to-metadata"))
    assert status == 400
    assert "refused" in body["detail"] and "169.254.169.254" in body["detail"]


async def test_internal_address_is_refused_when_loopback_is_not_allowed(serve: Callable[..., Any],
                                                                       specs: SpecServer) -> None:
    client = await serve(GOFANNON_OUTBOUND_ALLOW="none")
    await client.login("alice")
    status, body = await fetch(client, specs.url("/openapi.json"))
    assert status == 400 and "refused" in body["detail"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "example.com/openapi.json", ""])
async def test_url_without_http_scheme_is_a_400(url: str, alice: Any) -> None:
    status, body = await fetch(alice, url)
    assert status == 400 and "http://" in body["detail"]


async def test_fetch_needs_a_signed_in_user(serve: Callable[..., Any], specs: SpecServer) -> None:
    client = await serve()
    status, _ = await fetch(client, specs.url("/openapi.json"))
    assert status == 401


def test_openapi_operations_have_ids_paths_parameters_and_body(specs: SpecServer) -> None:
    ops = {op.operation_id: op for op in parser.operations(json.dumps(specs.openapi_doc()))}
    assert set(ops) == {"listPets", "createPet", "GET_/pets/{petId}"}
    assert ops["listPets"].base_url == specs.base and ops["listPets"].method == "get"
    assert [(p.name, p.location) for p in ops["listPets"].parameters] == [("limit", "query")]
    assert ops["createPet"].request_body_schema == {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "tag": {"type": "string"}}}
    assert ops["GET_/pets/{petId}"].parameters[0].required is True


def test_swagger_2_operations_use_host_base_path_and_body_parameter() -> None:
    ops = {op.operation_id: op for op in parser.operations(SWAGGER_2_YAML)}
    assert set(ops) == {"getForecast", "POST_/alerts"}
    assert ops["getForecast"].base_url == "https://weather.example.com/v2"
    assert {p.name: p.schema.get("type") for p in ops["getForecast"].parameters} == {"city": "string", "days": "integer"}
    assert ops["POST_/alerts"].request_body_schema == {"type": "object", "properties": {"email": {"type": "string"}}}


def test_tool_doc_describes_each_operation_for_the_composer() -> None:
    doc = parser.tool_doc("weather.yaml", SWAGGER_2_YAML)
    assert "getForecast" in doc and "GET https://weather.example.com/v2/forecast/{city}" in doc
    assert "http_client" in doc


@pytest.mark.parametrize("doc,why", [
    ({"openapi": "3.0.0", "info": {"title": "x", "version": "1"}}, "'paths'"),
    ({"openapi": "2.5", "info": {"title": "x", "version": "1"}, "paths": {}}, "3.x"),
    ({"swagger": "2.0", "paths": {}}, "'info'"),
    ({"swagger": "2.0", "info": {"title": "x", "version": "1"}, "paths": {"pets": {}}}, "start with '/'"),
    (["a", "list"], "object"),
])
def test_structurally_broken_specs_are_rejected_with_the_reason(doc: Any, why: str) -> None:
    with pytest.raises(parser.SpecError, match=why.replace("(", r"\(").replace(".", r"\.")):
        parser.parse_spec(yaml.safe_dump(doc))
