"""Routes: chat-settings sessions (wire contract §1.7), owned by the user who created them.

``sessions/<session_id>`` holds ``provider_config`` with snake_case keys, as the reference stores it.
Another user's session id answers exactly like an unknown one. A session made in a shared workspace carries
its ``workspaceId`` and follows the workspace's roles (docs/workspaces.md).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gofannon.errors import NotFound
from gofannon.models.provider import ProviderConfig
from gofannon.services.ownership import (
    DELETE, EDIT, OWNER_FIELD, READ, authorize, load_for, stamp_workspace, workspace_of,
)
from gofannon.web.workspace import active_workspace
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
    missing = NotFound(f"Document '{session_id}' not found in '{SESSIONS}'")
    existing = await kernel.store.get(SESSIONS, session_id)
    if existing is not None:
        await authorize(kernel, ident, existing, EDIT, not_found=missing)
        allowed = workspace_of(existing)
        new_doc: dict[str, Any] = {}
    else:
        workspace_id, _role = await active_workspace(request)
        new_doc = stamp_workspace({OWNER_FIELD: ident.uid}, ident, workspace_id)
        allowed = workspace_of(new_doc)
    denied = False

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal denied
        now = now_iso()
        if doc is None:
            doc = {"created_at": now, **new_doc} if new_doc else None
        if doc is None or workspace_of(doc) != allowed:  # created or replaced meanwhile by someone else
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
    doc = await load_for(kernel_of(request), identity(request), SESSIONS, request.match_info["session_id"], READ)
    return json_response(doc.get("provider_config"))


@routes.delete("/sessions/{session_id}")
@api_doc(summary="Delete a chat-settings session", tags=["sessions"])
async def delete_session(request: web.Request) -> web.Response:
    kernel, ident = kernel_of(request), identity(request)
    session_id = request.match_info["session_id"]
    missing = NotFound(f"Document '{session_id}' not found for deletion.")
    await load_for(kernel, ident, SESSIONS, session_id, DELETE, not_found=missing)
    if not await kernel.store.delete(SESSIONS, session_id):
        raise missing
    return json_response({"message": "Session deleted"})
