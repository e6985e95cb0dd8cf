"""Routes: agents CRUD and running agent code (``/agents/run-code``, ``/stream``, ``/start``)."""

from __future__ import annotations

from aiohttp import web

from gofannon.models.agent import CreateAgentRequest, RunCodeRequest, UpdateAgentRequest
from gofannon.models.run import nullable
from gofannon.services import agents, runs
from gofannon.web.workspace import active_workspace
from gofannon.web.common import api_doc, identity, json_response, kernel_of, model_call, no_content, parse_body
from gofannon.web.runs import frame, open_stream, pump

routes = web.RouteTableDef()


@routes.post("/agents")
@api_doc(summary="Create an agent (owned by the caller)", body=CreateAgentRequest, status=201, tags=["agents"])
async def create_agent(request: web.Request) -> web.Response:
    req = await parse_body(request, CreateAgentRequest)
    workspace_id, _role = await active_workspace(request)
    doc = await agents.create_agent(kernel_of(request), identity(request), req, workspace_id=workspace_id)
    return json_response(doc, status=201)


@routes.get("/agents")
@api_doc(summary="The active workspace's agents (the caller's own without a workspace; all for a site admin)",
         tags=["agents"])
async def list_agents(request: web.Request) -> web.Response:
    workspace_id, _role = await active_workspace(request)
    body = await agents.list_agents_json(kernel_of(request), identity(request), workspace_id)
    return web.Response(body=body, content_type="application/json")


@routes.get("/agents/{agent_id}")
@api_doc(summary="One agent", tags=["agents"])
async def get_agent(request: web.Request) -> web.Response:
    doc = await agents.get_agent(kernel_of(request), identity(request), request.match_info["agent_id"])
    return json_response(agents.ordered(doc))


@routes.put("/agents/{agent_id}")
@api_doc(summary="Partial update: only keys present are applied; `_rev` makes it conditional", body=UpdateAgentRequest,
         tags=["agents"])
async def update_agent(request: web.Request) -> web.Response:
    req = await parse_body(request, UpdateAgentRequest)
    doc = await agents.update_agent(kernel_of(request), identity(request), request.match_info["agent_id"], req)
    return json_response(doc)


@routes.delete("/agents/{agent_id}")
@api_doc(summary="Delete an agent and its deployments", status=204, tags=["agents"])
async def delete_agent(request: web.Request) -> web.Response:
    await agents.delete_agent(kernel_of(request), identity(request), request.match_info["agent_id"])
    return no_content()


async def _spec(request: web.Request, req: RunCodeRequest) -> dict[str, object]:
    """The run spec; a run in a shared active workspace charges its model calls to that workspace too."""
    spec: dict[str, object] = req.model_dump(by_alias=True, exclude_none=False)
    workspace_id, _role = await active_workspace(request)
    if not workspace_id.startswith("personal:"):
        spec["workspaceId"] = workspace_id
    return spec


@routes.post("/agents/run-code")
@api_doc(summary="Run agent code in the sandbox; 200 even when the agent fails", body=RunCodeRequest,
         tags=["agents"])
@model_call
async def run_code(request: web.Request) -> web.Response:
    req = await parse_body(request, RunCodeRequest)
    outcome = await runs.run_now(kernel_of(request), identity(request), await _spec(request, req))
    return json_response({
        "result": outcome["result"], "error": outcome["error"],
        "schemaWarnings": nullable(outcome["schemaWarnings"]), "opsLog": nullable(outcome["opsLog"]),
        "trace": nullable(outcome["trace"]),
    })


@routes.post("/agents/run-code/stream")
@api_doc(summary="Run agent code, streaming run_id / trace / done server-sent events", body=RunCodeRequest,
         tags=["agents"])
@model_call
async def run_code_stream(request: web.Request) -> web.StreamResponse:
    kernel = kernel_of(request)
    req = await parse_body(request, RunCodeRequest)
    record = await runs.start_recorded(kernel, identity(request), await _spec(request, req))
    run_id = record["runId"]
    resp = await open_stream(request)

    async def went_away() -> None:
        await runs.stop_local(kernel, run_id)

    try:
        await resp.write(frame("run_id", {"runId": run_id, "status": "running"}))
    except ConnectionError:
        await went_away()
        return resp
    await pump(request, resp, runs.channel(kernel, run_id), went_away, run_id=run_id)
    try:
        await resp.write_eof()
    except ConnectionError:
        pass
    return resp


@routes.post("/agents/run-code/start")
@api_doc(summary="Start a background run; follow it with /runs/{id}", body=RunCodeRequest, status=202,
         tags=["agents"])
@model_call
async def run_code_start(request: web.Request) -> web.Response:
    req = await parse_body(request, RunCodeRequest)
    record = await runs.start_recorded(kernel_of(request), identity(request), await _spec(request, req))
    return json_response({"runId": record["runId"], "status": "running"}, status=202)
