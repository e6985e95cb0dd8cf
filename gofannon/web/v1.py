"""The OpenAI-compatible API: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``.

Thin handlers over ``gofannon.services.gateway``. Every error under ``/v1/`` is rendered in OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}`` (the kernel middleware calls ``openai_error``),
with the status OpenAI's SDKs map to the right exception (docs/gateway.md "Errors").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from gofannon.errors import GofannonError
from gofannon.models.openai import ChatCompletionBody
from gofannon.services import gateway
from gofannon.services.memberships import memberships
from gofannon.services.workspaces import charges_workspace
from gofannon.web.workspace import active_workspace
from gofannon.web.common import api_doc, dumps, dumps_bytes, identity, json_response, kernel_of, model_call, read_json

log = logging.getLogger("gofannon.web.v1")
routes = web.RouteTableDef()

#: How often a streaming handler checks whether its client is still connected while the provider is silent.
DISCONNECT_POLL_S = 0.1

#: status → (OpenAI error type, code) when the error itself names none.
_SHAPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    502: ("server_error", "upstream_error"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "timeout"),
}


#: A provider's answers that mean "the request is wrong" (not "my key is", 401/403, nor "slow down", 429):
#: on /v1 they are the caller's 400, with the provider's message; elsewhere the kernel keeps its 502.
VENDOR_REFUSALS = frozenset({400, 404, 409, 413, 422})


def _message(detail: Any) -> tuple[str, str | None]:
    """A message (and the offending field) out of a ``detail``: a string, or pydantic's error list."""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        if first.get("type") == "json_invalid":  # the body is not JSON (its position is no parameter)
            return f"The request body is not valid JSON: {(first.get('ctx') or {}).get('error', 'decode error')}", None
        loc = [str(p) for p in first.get("loc") or [] if p != "body"]
        param = ".".join(loc) or None
        return (f"{first.get('msg', 'Invalid request')}" + (f" ('{param}')" if param else "")), param
    return (detail if isinstance(detail, str) else dumps(detail)), None


def error_body(status: int, detail: Any, exc: BaseException | None = None) -> tuple[int, dict[str, Any]]:
    """(status, body) of an error in OpenAI's shape. 402 (an exhausted allowance) becomes 429
    ``insufficient_quota`` as OpenAI answers, and 422 a 400, so SDKs raise the exception users expect."""
    message, param = _message(detail)
    if status == 502 and getattr(exc, "upstream_status", None) in VENDOR_REFUSALS:
        status = 400  # the provider refused what the caller sent (a tool schema, a parameter): the caller's to fix
    kind, code = _SHAPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    if status == 402:
        status = 429
    elif status == 422:
        status = 400
    kind = getattr(exc, "openai_type", None) or kind
    code = getattr(exc, "openai_code", None) or code
    param = getattr(exc, "param", None) or param
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(status: int, detail: Any, headers: dict[str, str] | None = None,
                 exc: BaseException | None = None) -> web.Response:
    status, body = error_body(status, detail, exc)
    return web.Response(status=status, body=dumps_bytes(body), content_type="application/json", charset="utf-8",
                        headers=headers)


def is_v1(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


# -- routes ---------------------------------------------------------------------------------------------
@routes.get("/v1/models")
@api_doc(summary="OpenAI-compatible: the models the caller can use (catalog models and deployed agents)",
         tags=["openai"])
async def list_models(request: web.Request) -> web.Response:
    ident = identity(request)
    kernel = kernel_of(request)
    workspace_id, _role = await active_workspace(request)
    shared: str | list[str] | None = workspace_id if charges_workspace(workspace_id) else None
    if shared is None:  # acting in the personal workspace: every agent /rest would run for the caller is listed,
        # those of each shared workspace they are a member of included (chat can call them by name anyway)
        shared = [w["workspaceId"] for w in await memberships(kernel, ident)
                  if charges_workspace(w.get("workspaceId"))]
    data = await gateway.list_models(kernel, ident, shared)
    return json_response({"object": "list", "data": data})


@routes.get("/v1/models/{model_id:[\\s\\S]+}")
@api_doc(summary="OpenAI-compatible: one model (ids contain '/'), or 404 model_not_found", tags=["openai"])
async def get_model(request: web.Request) -> web.Response:
    ident = identity(request)
    return json_response(await gateway.get_model(kernel_of(request), ident, request.match_info["model_id"]))


@routes.post("/v1/chat/completions")
@api_doc(summary="OpenAI-compatible chat completions (stream or not) over every provider and deployed agent, "
                 "billed like chat", body=ChatCompletionBody, tags=["openai"])
@model_call
async def chat_completions(request: web.Request) -> web.StreamResponse:
    ident = identity(request)
    kernel = kernel_of(request)
    req = gateway.parse_request(await read_json(request))
    workspace_id, _role = await active_workspace(request)
    req.workspace_id = workspace_id if charges_workspace(workspace_id) else None
    if not req.stream:  # bytes as they are: `application/json` without a charset parameter, as OpenAI answers
        return web.Response(body=dumps_bytes(await gateway.complete(kernel, ident, req)),
                            content_type="application/json")
    return await _stream(request, gateway.stream(kernel, ident, req))


async def _stream(request: web.Request, chunks: Any) -> web.StreamResponse:
    """Write batches of chunks as server-sent events, each as soon as it exists. Errors before the first chunk are
    ordinary HTTP errors; after it, one ``data: {"error": ...}`` event ends the stream. A client that
    goes away cancels the wait for the provider and closes the provider's stream."""
    task = asyncio.current_task()
    assert task is not None
    loop = task.get_loop()
    gone = False

    def watch() -> None:  # a timer, not a task: nothing to schedule per stream but one timer handle
        nonlocal gone, watcher
        transport = request.transport
        if transport is None or transport.is_closing():
            gone = True
            task.cancel()
            return
        watcher = loop.call_later(DISCONNECT_POLL_S, watch)

    watcher = loop.call_later(DISCONNECT_POLL_S, watch)
    response: web.StreamResponse | None = None
    try:
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:  # pragma: no cover - the gateway always yields
            first = None
        response = _EventStream(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                         "X-Accel-Buffering": "no"})
        await response.prepare(request)
        if first is not None:
            # The headers leave with the first batch, in one packet; the last batch, [DONE] and the end of the
            # chunked body leave together.
            if isinstance(first, gateway.FinalBatch):
                await response.write_eof(b"".join(map(_event, first)) + _DONE)
                return response
            await response.write(b"".join(map(_event, first)))
            async for batch in chunks:
                if isinstance(batch, gateway.FinalBatch):
                    await response.write_eof(b"".join(map(_event, batch)) + _DONE)
                    return response
                await response.write(b"".join(map(_event, batch)))
            await response.write(_DONE)
        await response.write_eof()
        return response
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        return response or web.Response(status=499)
    except (ConnectionResetError, ConnectionError):
        return response or web.Response(status=499)
    except GofannonError as exc:
        if response is None:
            raise
        status, body = error_body(exc.status, exc.detail, exc)
        body["error"]["status"] = status
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(_event(body))
            await response.write_eof()
        return response
    except Exception as exc:
        if response is None:
            raise
        log.error("stream of %s failed after it began", request.path, exc_info=exc)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(_event({"error": {"message": "An internal server error occurred.",
                                                   "type": "server_error", "param": None, "code": None,
                                                   "status": 500}}))
            await response.write_eof()
        return response
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.shield(chunks.aclose())


class _EventStream(web.StreamResponse):
    """A stream whose headers wait for its first chunk (aiohttp's ``Response`` does the same), so the client
    gets the status, the headers and the first chunks in one packet: the time to the first token is one
    send, not three. (On an aiohttp without this switch the headers simply leave at ``prepare``.)"""

    _send_headers_immediately = False


_DONE = b"data: [DONE]\n\n"


def _event(obj: Any) -> bytes:
    return b"data: " + dumps_bytes(obj) + b"\n\n"
