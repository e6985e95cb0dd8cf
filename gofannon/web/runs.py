"""Routes: run records (``/runs``) and the server-sent-event stream shared with ``/agents/run-code/stream``."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from gofannon.models import run as run_model
from gofannon.services import runs
from gofannon.web.workspace import active_workspace
from gofannon.web.common import api_doc, dumps, identity, json_response, kernel_of, model_call

routes = web.RouteTableDef()

HEARTBEAT_AFTER_S = 10.0
POLL_S = 1.0
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {dumps(data)}\n\n".encode()


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await resp.prepare(request)
    return resp


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def record_done(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``done`` frame of a finished run, from its record."""
    return {"outcome": doc.get("status"), "result": doc.get("result"), "error": doc.get("error"),
            "schemaWarnings": doc.get("schemaWarnings"), "opsLog": doc.get("opsLog")}


async def pump(request: web.Request, resp: web.StreamResponse, ch: runs.Channel,
               on_disconnect: Callable[[], Awaitable[None]] | None = None, *, run_id: str | None = None) -> None:
    """Copy a run's events to the client until ``done``; a heartbeat comment after 10 s of silence.

    A client that goes away is noticed within a second (``on_disconnect`` then stops the run). At each
    heartbeat the run record is checked too, so a run whose executor died still ends the stream.
    """
    cursor: Any = None
    last_write = time.monotonic()
    try:
        while True:
            if _gone(request):
                raise ConnectionResetError("client went away")
            events, done, cursor = await ch.read(cursor, POLL_S)
            for event in events:
                await resp.write(frame("trace", event))
            if done is not None:
                await resp.write(frame("done", done))
                return
            if events:
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= HEARTBEAT_AFTER_S:
                if run_id is not None:
                    doc = await kernel_of(request).store.get(run_model.RUNS, run_id)
                    if doc is not None and doc.get("status") != "running":
                        await resp.write(frame("done", record_done(doc)))
                        return
                await resp.write(b": heartbeat\n\n")
                last_write = time.monotonic()
    except (ConnectionResetError, ConnectionError):
        if on_disconnect is not None:
            await on_disconnect()
    except asyncio.CancelledError:  # the server cancelled the handler: the client is gone
        if on_disconnect is not None:
            await asyncio.shield(on_disconnect())
        raise


@routes.get("/runs")
@api_doc(summary="The caller's runs (newest first); ?agent_id= filters", tags=["runs"])
async def list_runs(request: web.Request) -> web.Response:
    workspace_id, _role = await active_workspace(request)
    docs = await runs.list_records(kernel_of(request), identity(request), request.query.get("agent_id"), workspace_id)
    return json_response({"runs": [run_model.summary(d) for d in docs]})


@routes.get("/runs/{run_id}")
@api_doc(summary="One run: summary, events, result, schema warnings, ops log", tags=["runs"])
async def get_run(request: web.Request) -> web.Response:
    kernel = kernel_of(request)
    run_id = request.match_info["run_id"]
    doc = await runs.get_record(kernel, identity(request), run_id)
    live = await runs.events_so_far(kernel, run_id) if doc.get("status") == "running" else None
    return json_response(run_model.detail(doc, live))


@routes.get("/runs/{run_id}/stream")
@api_doc(summary="Server-sent events of a run: replay, then live until done", tags=["runs"])
async def stream_run(request: web.Request) -> web.StreamResponse:
    kernel = kernel_of(request)
    run_id = request.match_info["run_id"]
    doc = await runs.get_record(kernel, identity(request), run_id)
    live = doc.get("status") == "running" and (runs.remote(kernel) or runs.live_events(kernel, run_id) is not None)
    resp = await open_stream(request)
    await resp.write(frame("run_id", {"runId": run_id, "status": doc.get("status")}))
    if live:
        await pump(request, resp, runs.channel(kernel, run_id), run_id=run_id)
    else:
        for event in doc.get("events") or []:
            await resp.write(frame("trace", event))
        await resp.write(frame("done", record_done(doc)))
    await resp.write_eof()
    return resp


@routes.post("/runs/{run_id}/stop")
@api_doc(summary="Stop a running run (kills its sandbox child)", status=202, tags=["runs"])
@model_call
async def stop_run(request: web.Request) -> web.Response:
    answer = await runs.request_stop(kernel_of(request), identity(request), request.match_info["run_id"])
    return json_response(answer, status=202)
