"""Routes: ``/mcp``, the MCP Streamable HTTP transport (POST JSON-RPC, GET server stream, DELETE session).

A thin adapter: it checks the transport's rules (``Origin``, credentials, ``MCP-Protocol-Version``,
``Mcp-Session-Id``, the JSON-RPC envelope) and hands methods to ``gofannon.services.mcp_server``. The
route is public in the route table so that this module, not the middleware, shapes the 401 the MCP
authorization spec asks for (``WWW-Authenticate: Bearer resource_metadata=...``). ``POST /mcp/tools``
(``gofannon/web/mcp.py``, listing a remote server's tools) is a different route.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import web

from gofannon.jsontext import json_bytes, loads
from gofannon.services import mcp_server as svc
from gofannon.services.mcp_server import INVALID_REQUEST, McpError
from gofannon.web.common import api_doc, kernel_of, model_call, optional_identity, public, public_origin
from gofannon.web.cors import mcp_origin_allowed
from gofannon.web.keys import KERNEL

routes = web.RouteTableDef()

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_S = 15.0


def _answer(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json_bytes(svc.dumps(payload)), status=status, content_type="application/json",
                        charset="utf-8", headers=headers)


def _error(exc: McpError, req_id: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    return _answer(exc.payload(req_id), exc.http_status, {**exc.headers, **(headers or {})} or None)


def base_url(request: web.Request) -> str:
    return public_origin(request)


def check_origin(request: web.Request) -> None:
    """DNS-rebinding guard: a browser page of another site may not drive ``/mcp`` (403).

    Allowed: no ``Origin`` (non-browser clients), and the origins ``gofannon.web.cors.mcp_origin_allowed``
    accepts (the kernel's own, ``FRONTEND_URL``'s, ``GOFANNON_MCP_ALLOWED_ORIGINS``, loopback in local/dev/test).
    """
    origin = request.headers.get("Origin")
    if origin is None or mcp_origin_allowed(kernel_of(request).settings, base_url(request), origin):
        return
    raise McpError(INVALID_REQUEST, f"Origin {origin!r} is not allowed to use this MCP server", http_status=403)


class _Unauthenticated(Exception):
    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error = error


def _unauthorized(request: web.Request, exc: _Unauthenticated) -> web.Response:
    challenge = f'Bearer resource_metadata="{base_url(request)}/.well-known/oauth-protected-resource"'
    if exc.error:
        challenge += f', error="{exc.error}", error_description="{exc.message}"'
    payload = McpError(INVALID_REQUEST, exc.message, http_status=401).payload()
    return _answer(payload, 401, {"WWW-Authenticate": challenge})


def caller(request: web.Request) -> Any:
    """The authenticated caller (bearer token or session cookie), checked against this resource."""
    ident = optional_identity(request)
    if ident is None:
        if "Authorization" in request.headers:
            raise _Unauthenticated("The access token is invalid, expired or revoked", "invalid_token")
        raise _Unauthenticated("Authentication required: send Authorization: Bearer <token>")
    resource = (ident.token or {}).get("resource")
    if resource is not None and str(resource).rstrip("/") != f"{base_url(request)}/mcp":
        raise _Unauthenticated("The access token was issued for another resource", "invalid_token")
    return ident


def check_version(request: web.Request, *, stateful: bool = False) -> None:
    """``MCP-Protocol-Version``, when sent, is one the server speaks; GET and DELETE (``stateful``) belong to the
    session revisions only (405 on a stateless one, as the SDK's server answers)."""
    version = request.headers.get(VERSION_HEADER)
    if version is None:
        return
    if version in svc.modern_versions() and stateful:
        raise McpError(INVALID_REQUEST, f"Protocol revision {version} has no sessions or server stream: POST only",
                       http_status=405, headers={"Allow": "POST"})
    if version not in svc.supported_versions():
        raise svc.unsupported_version(version)


def session_id_of(request: web.Request) -> str:
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        raise McpError(INVALID_REQUEST, f"Missing {SESSION_HEADER} header: send initialize first", http_status=400)
    return session_id


def _sse(message: dict[str, Any]) -> bytes:
    return f"event: message\ndata: {svc.dumps(message)}\n\n".encode()


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _parse(request: web.Request) -> dict[str, Any]:
    content_type = request.content_type
    if content_type and content_type != "application/json":
        raise McpError(INVALID_REQUEST, "Content-Type must be application/json", http_status=415)
    raw = await request.read()
    try:
        message = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise McpError(svc.PARSE_ERROR, f"Parse error: {exc}", http_status=400) from None
    if isinstance(message, list):
        raise McpError(INVALID_REQUEST, "JSON-RPC batches are not part of MCP since protocol revision 2025-06-18; "
                       "send one message per POST", http_status=400)
    if not isinstance(message, dict):
        raise McpError(INVALID_REQUEST, "Invalid Request: a JSON-RPC message is a JSON object", http_status=400)
    from pydantic import ValidationError

    try:
        svc.sdk().jsonrpc_message_adapter.validate_python(message)
    except ValidationError:
        error = McpError(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 request, notification or response",
                         http_status=400)
        error.req_id = message.get("id") if isinstance(message.get("id"), (str, int)) else None
        raise error from None
    if "method" in message and "id" in message and not _valid_id(message["id"]):
        # JSON-RPC allows null and fractional ids; MCP does not ("a string or integer, MUST NOT be null")
        raise McpError(INVALID_REQUEST, "Invalid Request: a request id must be a string or an integer (not null)",
                       http_status=400)
    return message


def _valid_id(req_id: Any) -> bool:
    return isinstance(req_id, str) or (isinstance(req_id, int) and not isinstance(req_id, bool))


@routes.post("/mcp")
@public
@api_doc(summary="MCP Streamable HTTP: one JSON-RPC message per POST (deployed agents are the tools)",
         tags=["mcp"])
@model_call
async def mcp_post(request: web.Request) -> web.StreamResponse:
    kernel = kernel_of(request)
    req_id: Any = None
    try:
        check_origin(request)
        ident = caller(request)
        message = await _parse(request)
        method = message.get("method")
        req_id = message.get("id")
        params = message.get("params")
        if request.headers.get(VERSION_HEADER) in svc.modern_versions():
            return await _stateless(request, ident, message)
        if method is None:
            return web.Response(status=202)  # a response to a server request: we send none, nothing to do
        is_request = "id" in message
        if method == "initialize" and is_request:
            await _shared_workspace(request)  # a workspace the caller cannot act in fails every request alike
            session_id, result = await svc.create_session(kernel, ident, params)
            return _answer({"jsonrpc": "2.0", "id": req_id, "result": result}, headers={SESSION_HEADER: session_id})
        check_version(request)
        session_id = session_id_of(request)
        workspace_id = await _shared_workspace(request) if is_request else None
        if method == "tools/call" and is_request:
            return await _call_tool(request, ident, session_id, req_id, params)
        session = await svc.load_session(kernel, ident, session_id)
        if not is_request:
            if method == "notifications/cancelled":
                await svc.cancel(kernel, ident, session_id, params)
            return web.Response(status=202)
        if method == "tools/list":
            return _raw_result(req_id, await svc.list_tools_json(kernel, ident, session.get("protocolVersion"),
                                                                 workspace_id=workspace_id))
        if method == "ping":
            return _answer({"jsonrpc": "2.0", "id": req_id, "result": {}})
        if method == "initialize":
            raise McpError(INVALID_REQUEST, "initialize must be sent as a request")
        raise McpError(svc.METHOD_NOT_FOUND, f"Method not found: {method}")
    except McpError as exc:
        if exc.http_status == 401:  # the token expired since it was resolved
            return _unauthorized(request, _Unauthenticated(exc.message, "invalid_token"))
        return _error(exc, exc.req_id if exc.req_id is not None else req_id)
    except _Unauthenticated as exc:
        return _unauthorized(request, exc)


async def _shared_workspace(request: web.Request) -> str | None:
    """The active shared workspace (``X-Gofannon-Workspace``, or the token's bound one), whose deployments are
    listed besides the public ones; None for the personal workspace."""
    from gofannon.errors import GofannonError
    from gofannon.web.workspace import active_workspace

    try:
        workspace_id, _role = await active_workspace(request)
    except GofannonError:
        raise McpError(INVALID_REQUEST, "Workspace not found: not one of yours, or not the one your token is "
                       "bound to", http_status=400) from None
    return None if workspace_id.startswith("personal:") else workspace_id


def _raw_result(req_id: Any, result_json: str) -> web.Response:
    return web.Response(body=json_bytes(f'{{"jsonrpc":"2.0","id":{json.dumps(req_id)},"result":{result_json}}}'),
                        content_type="application/json", charset="utf-8")


async def _stateless(request: web.Request, ident: Any, message: dict[str, Any]) -> web.StreamResponse:
    """A request of a stateless revision (2026-07-28): no session; its envelope rides in ``params._meta``."""
    kernel = kernel_of(request)
    if "id" not in message:
        return web.Response(status=202)  # no client notification means anything here (cancel = close the stream)
    method = message.get("method")
    if method is None:
        raise McpError(INVALID_REQUEST, "Body must be a single JSON-RPC request or notification object",
                       http_status=400)
    version = svc.check_envelope(message, request.headers)
    req_id, params = message["id"], message.get("params")
    if method not in ("server/discover", "tools/list", "tools/call", "subscriptions/listen"):
        raise svc.modern_error(svc.METHOD_NOT_FOUND, f"Method not found: {method}")
    svc.validate_params(method, version, params)
    workspace_id = await _shared_workspace(request)  # every request, so a wrong workspace is never ignored
    if method == "server/discover":
        return _answer({"jsonrpc": "2.0", "id": req_id, "result": svc.discover(version)})
    if method == "tools/list":
        return _raw_result(req_id, await svc.list_tools_json(kernel, ident, version, workspace_id=workspace_id))
    if method == "tools/call":
        return await _call_tool(request, ident, None, req_id, params, version=version)
    return await _listen(request, ident, req_id, params or {})


async def _call_tool(request: web.Request, ident: Any, session_id: str | None, req_id: Any,
                     params: dict[str, Any] | None, *, version: str | None = None) -> web.StreamResponse:
    """Run the agent; SSE (progress notifications, then the result) when the request asked for progress.

    ``session_id`` is None on the stateless revisions: the run then gets an id of its own, and closing the
    response stream is what cancels it."""
    kernel = kernel_of(request)
    if session_id is None:
        call = await svc.prepare_call(kernel, ident, params)
        run_key = uuid.uuid4().hex
    else:
        # The session and the call are checked side by side (one store round trip less); a bad session wins.
        session, prepared = await asyncio.gather(svc.load_session(kernel, ident, session_id),
                                                 svc.prepare_call(kernel, ident, params), return_exceptions=True)
        for outcome in (session, prepared):
            if isinstance(outcome, BaseException):
                raise outcome
        call = prepared  # type: ignore[assignment]
        version = session.get("protocolVersion")  # type: ignore[union-attr]
        run_key = session_id
    if call.refused is not None:  # arguments that do not fit the inputSchema: nothing runs
        return _answer({"jsonrpc": "2.0", "id": req_id, "result": svc.shaped("tools/call", str(version), call.refused)})
    await svc.start_call(kernel, ident, run_key, req_id, call)
    if call.progress_token is None or "text/event-stream" not in request.headers.get("Accept", "text/event-stream"):
        try:
            result = await svc.wait_call(kernel, call, progress=None, gone=lambda: _gone(request))
        except asyncio.CancelledError:  # the server cancelled the handler: the client is gone
            await asyncio.shield(svc.abandon(kernel, call))
            raise
        if result is None:  # cancelled: no answer is due, so an event stream that ends without one
            return web.Response(status=200, headers=SSE_HEADERS)
        return _answer({"jsonrpc": "2.0", "id": req_id, "result": svc.shaped("tools/call", str(version), result)})
    resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await resp.prepare(request)
    broken = False

    async def progress(step: float, message: str | None) -> None:
        nonlocal broken
        note = {"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": call.progress_token, "progress": step, "message": message}}
        try:
            await resp.write(_sse(note))
        except (ConnectionResetError, ConnectionError):
            broken = True

    try:
        result = await svc.wait_call(kernel, call, progress=progress, gone=lambda: broken or _gone(request))
    except asyncio.CancelledError:  # the server cancelled the handler: the client is gone
        await asyncio.shield(svc.abandon(kernel, call))
        raise
    if result is not None and not broken:
        try:
            shaped = svc.shaped("tools/call", str(version), result)
            await resp.write(_sse({"jsonrpc": "2.0", "id": req_id, "result": shaped}))
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
    return resp


async def _listen(request: web.Request, ident: Any, req_id: Any, params: dict[str, Any]) -> web.StreamResponse:
    """``subscriptions/listen`` (stateless revisions): an event stream that acknowledges what it will carry,
    then ``notifications/tools/list_changed`` when deployments change; the result ends it (at shutdown)."""
    if "text/event-stream" not in request.headers.get("Accept", ""):
        raise McpError(INVALID_REQUEST, "Not Acceptable: subscriptions/listen answers text/event-stream",
                       http_status=406)
    wanted = bool((params.get("notifications") or {}).get("toolsListChanged"))
    kernel = kernel_of(request)
    hub = svc.streams(kernel)
    key = f"listen:{uuid.uuid4().hex}"
    queue = await hub.open(key)
    resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await resp.prepare(request)
    honoured = {"toolsListChanged": True} if wanted else {}
    stamp = {"io.modelcontextprotocol/subscriptionId": req_id}  # on every frame of the stream
    try:
        await resp.write(_sse({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                               "params": {"notifications": honoured, "_meta": stamp}}))
        while True:
            try:
                note = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if note is None:
                done = {"resultType": "complete", "_meta": stamp}
                await resp.write(_sse({"jsonrpc": "2.0", "id": req_id, "result": done}))
                break
            if wanted:
                await resp.write(_sse({**note, "params": {**(note.get("params") or {}), "_meta": stamp}}))
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        hub.drop(key, queue)
    return resp


@routes.get("/mcp")
@public
@api_doc(summary="MCP Streamable HTTP: the server's stream for a session (notifications/tools/list_changed)",
         tags=["mcp"])
async def mcp_get(request: web.Request) -> web.StreamResponse:
    kernel = kernel_of(request)
    try:
        check_origin(request)
        ident = caller(request)
        if "text/event-stream" not in request.headers.get("Accept", ""):
            raise McpError(INVALID_REQUEST, "Not Acceptable: the server stream is text/event-stream", http_status=406)
        check_version(request, stateful=True)
        session_id = session_id_of(request)
        await svc.load_session(kernel, ident, session_id)
    except McpError as exc:
        return _error(exc)
    except _Unauthenticated as exc:
        return _unauthorized(request, exc)
    hub = svc.streams(kernel)
    queue = await hub.open(session_id)
    resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await resp.prepare(request)
    try:
        while True:
            try:
                note = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                try:
                    await svc.load_session(kernel, ident, session_id)  # ended by DELETE on another process?
                except McpError:
                    break
                await resp.write(b": keepalive\n\n")
                continue
            if note is None:
                break
            await resp.write(_sse(note))
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        hub.drop(session_id, queue)
    return resp


@routes.delete("/mcp")
@public
@api_doc(summary="MCP Streamable HTTP: end a session", status=204, tags=["mcp"])
@model_call
async def mcp_delete(request: web.Request) -> web.StreamResponse:
    kernel = kernel_of(request)
    try:
        check_origin(request)
        ident = caller(request)
        check_version(request, stateful=True)
        await svc.end_session(kernel, ident, session_id_of(request))
    except McpError as exc:
        return _error(exc)
    except _Unauthenticated as exc:
        return _unauthorized(request, exc)
    return web.Response(status=204)


async def _end_streams(app: web.Application) -> None:
    """On shutdown the server's open GET streams end at once, so they do not hold the process open."""
    kernel = app[KERNEL]
    if kernel.has_component(svc.STREAMS_KEY):
        svc.streams(kernel).close()


def setup(app: web.Application) -> None:
    app.on_shutdown.append(_end_streams)
