"""Routes: agent code generation (``POST /agents/generate-code``, wire contract §5.1)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from gofannon.services import codegen
from gofannon.web.common import api_doc, identity, json_response, kernel_of, model_call, parse_body

routes = web.RouteTableDef()


class GenerateCodeResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)

    code: str
    friendlyName: str
    docstring: str
    thoughts: object | None = None


@routes.post("/agents/generate-code")
@api_doc(summary="Generate an agent's code, name and docstring with the composer model (two charged LLM calls)",
         body=codegen.GenerateCodeRequest, response=GenerateCodeResponse, tags=["agents"])
@model_call
async def generate_code(request: web.Request) -> web.Response:
    ident = identity(request)
    body = await parse_body(request, codegen.GenerateCodeRequest)
    result = await codegen.generate_code(kernel_of(request), ident, body)
    return json_response(result.wire())
