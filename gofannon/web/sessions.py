"""Routes: chat-settings sessions (wire contract §1.7), owned by the user who created them.

``sessions/<session_id>`` holds ``provider_config`` with snake_case keys, as the reference stores it.
Another user's session id answers exactly like an unknown one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gofannon.errors import NotFound
from gofannon.models.provider import ProviderConfig
from gofannon.services.ownership import OWNER_FIELD, load_owned, owns
from gofannon.timeutil import now_iso
from gofannon.web.common import api_doc, identity, json_response, kernel_of, parse_body

routes = web.RouteTableDef()
SESSIONS = "sessions"


@routes.post("/sessions/{session_id}/config")
@api_doc(summary="Save the chat settings of a session", body=ProviderConfig, tags=["sessions"])
async def save_config(request: web.Request) -> web.Response:
    kernel, ident = kernel_of(request), identity(request)
    session_id = request.match_info["session_id"]
    config = await parse_body(request, ProviderConfig)
    dumped = config.model_dump(by_alias=False)
    denied = False

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal denied
        now = now_iso()
        if doc is None:
            doc = {"created_at": now, OWNER_FIELD: ident.uid}
        elif not owns(ident, doc):
            denied = True
            return None
        doc["provider_config"] = dumped
        doc["updated_at"] = now
        return doc

    await kernel.store.update(SESSIONS, session_id, change)
    if denied:
        raise NotFound(f"Document '{session_id}' not found in '{SESSIONS}'")
    return json_response({"message": "Configuration updated", "session_id": session_id})


@routes.get("/sessions/{session_id}/config")
@api_doc(summary="The chat settings of a session (null when none saved)", tags=["sessions"])
async def get_config(request: web.Request) -> web.Response:
    doc = await load_owned(kernel_of(request), identity(request), SESSIONS, request.match_info["session_id"])
    return json_response(doc.get("provider_config"))


@routes.delete("/sessions/{session_id}")
@api_doc(summary="Delete a chat-settings session", tags=["sessions"])
async def delete_session(request: web.Request) -> web.Response:
    kernel, ident = kernel_of(request), identity(request)
    session_id = request.match_info["session_id"]
    doc = await kernel.store.get(SESSIONS, session_id)
    if doc is None or not owns(ident, doc) or not await kernel.store.delete(SESSIONS, session_id):
        raise NotFound(f"Document '{session_id}' not found for deletion.")
    return json_response({"message": "Session deleted"})
