"""Routes: specs (``POST /specs/fetch``, wire contract §1.11/§9.1 with the fixes of §12.20 and DECISIONS)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from gofannon.tools import connector
from gofannon.web.common import api_doc, identity, json_response, kernel_of, parse_body

routes = web.RouteTableDef()


class FetchSpecRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    url: str


class FetchSpecResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)

    name: str
    content: str


@routes.post("/specs/fetch")
@api_doc(summary="Fetch an OpenAPI 3.x or Swagger 2.0 spec (JSON or YAML) through the SSRF guard",
         body=FetchSpecRequest, response=FetchSpecResponse, tags=["specs"])
async def fetch_spec(request: web.Request) -> web.Response:
    identity(request)
    body = await parse_body(request, FetchSpecRequest)
    kernel = kernel_of(request)
    return json_response(await connector(kernel, "openapi").fetch_spec(kernel, body.url))
