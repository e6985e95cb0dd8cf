"""Routes: deploy / undeploy / status, the list of deployed APIs, and ``POST /rest/{friendly_name}``."""

from __future__ import annotations

from aiohttp import web

from gofannon.services import deployments, scopes
from gofannon.web.workspace import active_workspace
from gofannon.web.common import api_doc, identity, json_response, kernel_of, model_call, no_content, read_json

routes = web.RouteTableDef()


@routes.post("/agents/{agent_id}/deploy")
@api_doc(summary="Publish an agent at /rest/{friendlyName}", status=201, tags=["deployments"])
async def deploy(request: web.Request) -> web.Response:
    answer = await deployments.deploy(kernel_of(request), identity(request), request.match_info["agent_id"])
    return json_response(answer, status=201)


@routes.delete("/agents/{agent_id}/undeploy")
@api_doc(summary="Unpublish an agent", status=204, tags=["deployments"])
async def undeploy(request: web.Request) -> web.Response:
    await deployments.undeploy(kernel_of(request), identity(request), request.match_info["agent_id"])
    return no_content()


@routes.get("/agents/{agent_id}/deployment")
@api_doc(summary="Whether the agent is deployed, and under which name", tags=["deployments"])
async def deployment_status(request: web.Request) -> web.Response:
    answer = await deployments.status(kernel_of(request), identity(request), request.match_info["agent_id"])
    return json_response(answer)


@routes.get("/deployments")
@api_doc(summary="Every deployed agent (deploying is publishing)", tags=["deployments"])
async def list_deployments(request: web.Request) -> web.Response:
    workspace_id, _role = await active_workspace(request)
    shared = None if workspace_id.startswith("personal:") else workspace_id
    return json_response(await deployments.list_deployments(kernel_of(request), shared))


@routes.post("/rest/{friendly_name}")
@api_doc(summary="Run a deployed agent with the JSON body as input_dict; answers its raw result",
         tags=["deployments"])
@model_call
async def rest(request: web.Request) -> web.Response:
    ident = identity(request)
    kernel = kernel_of(request)
    name = request.match_info["friendly_name"]
    agent = await deployments.load_deployed(kernel, name, ident)  # 404 before 422
    await scopes.admit(kernel, ident, f"agent/{name}")  # a scoped token: expiry, models, rpm
    await scopes.check_budget(kernel, ident)
    body = await read_json(request)
    return json_response(await deployments.run_agent(kernel, ident, agent, body))
