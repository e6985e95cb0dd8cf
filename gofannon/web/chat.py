"""Routes: chat tickets (wire contract §1.6). ``POST /chat`` answers 200 with the persisted ``pending``
ticket; ``GET /chat/{ticket_id}`` shows the caller's own ticket (another user's is a 404)."""

from __future__ import annotations

from aiohttp import web

from gofannon.jobs import tickets
from gofannon.models.chat import ChatRequest, chat_response
from gofannon.services.workspaces import charges_workspace
from gofannon.web.workspace import active_workspace
from gofannon.web.common import api_doc, identity, json_response, kernel_of, model_call, parse_body

routes = web.RouteTableDef()


@routes.post("/chat")
@api_doc(summary="Queue a chat completion; poll GET /chat/{ticket_id}", body=ChatRequest, tags=["chat"])
@model_call
async def post_chat(request: web.Request) -> web.Response:
    ident = identity(request)
    body = await parse_body(request, ChatRequest)
    workspace_id, _role = await active_workspace(request)
    doc = await tickets.submit_chat(kernel_of(request), ident, body,
                                    workspace_id=workspace_id if charges_workspace(workspace_id) else None)
    return json_response(chat_response(doc["_id"], doc))


@routes.get("/chat/{ticket_id}")
@api_doc(summary="A chat ticket's status and result", tags=["chat"])
async def get_chat(request: web.Request) -> web.Response:
    ticket_id = request.match_info["ticket_id"]
    doc = await tickets.get_ticket(kernel_of(request), identity(request), ticket_id)
    return json_response(chat_response(ticket_id, doc))
