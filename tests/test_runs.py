"""Streaming runs and run records over HTTP: SSE frames, /runs, replay, stop, ownership."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from conftest import Client

PRINTER = "async def run(input_dict, tools):\n    print('one')\n    print('two')\n    return {'outputText': 'done'}\n"
SLEEPER = "import asyncio\nasync def run(input_dict, tools):\n    print('started')\n    await asyncio.sleep(60)\n"


async def read_sse(resp: aiohttp.ClientResponse, *, until: str | None = "done") -> list[tuple[str, Any]]:
    """Frames as (event, data) pairs; comments come back as ("comment", text)."""
    frames: list[tuple[str, Any]] = []
    event, data = None, []
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            frames.append(("comment", line[1:].strip()))
            if until == "comment":
                return frames
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and event is not None:
            frames.append((event, json.loads("\n".join(data))))
            if event == until:
                return frames
            event, data = None, []
    return frames


def body(code: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "inputDict": {"inputText": "x"}, "tools": {}, **extra}


async def wait_status(client: Client, run_id: str, *, not_status: str = "running") -> dict[str, Any]:
    for _ in range(200):
        async with client.get(f"/runs/{run_id}") as r:
            doc = await r.json()
        if doc["status"] != not_status:
            return doc  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} stayed {not_status}")


async def test_streamed_run_sends_run_id_trace_and_done_frames(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/agents/run-code/stream", json=body(PRINTER, friendlyName="printer")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["X-Accel-Buffering"] == "no"
        frames = await read_sse(r)
    kinds = [k for k, _ in frames]
    assert kinds[0] == "run_id" and kinds[-1] == "done" and set(kinds[1:-1]) == {"trace"}
    run_id = frames[0][1]["runId"]
    assert frames[0][1] == {"runId": run_id, "status": "running"}
    printed = [d["message"] for k, d in frames if k == "trace" and d["type"] == "stdout"]
    assert printed == ["one", "two"]
    assert frames[-1][1] == {"outcome": "success", "result": {"outputText": "done"}, "error": None,
                             "schemaWarnings": None, "opsLog": None}
    doc = await wait_status(client, run_id)
    assert doc["status"] == "success" and doc["agentName"] == "printer" and doc["result"] == {"outputText": "done"}
    assert doc["inputDict"] == {"inputText": "x"} and doc["completedAt"] >= doc["startedAt"]
    assert [e["type"] for e in doc["events"]] == [d["type"] for k, d in frames if k == "trace"]


async def test_failed_stream_ends_with_an_error_outcome(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/agents/run-code/stream",
                           json=body("async def run(input_dict, tools):\n    raise ValueError('nope')\n")) as r:
        frames = await read_sse(r)
    assert frames[-1][1]["outcome"] == "error" and frames[-1][1]["error"] == "ValueError: nope"


async def test_started_runs_are_listed_replayed_and_private(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/agents/run-code/start", json=body(PRINTER, agentId="agent-1")) as r:
        assert r.status == 202
        started = await r.json()
    assert started["status"] == "running" and list(started) == ["runId", "status"]
    run_id = started["runId"]
    doc = await wait_status(client, run_id)
    assert list(doc) == ["runId", "agentId", "agentName", "status", "startedAt", "completedAt", "inputDict", "error",
                         "events", "result", "schemaWarnings", "opsLog"]
    assert doc["status"] == "success" and doc["agentName"] == "sandbox_agent" and doc["agentId"] == "agent-1"
    async with client.get("/runs") as r:
        runs = (await r.json())["runs"]
    assert [x["runId"] for x in runs] == [run_id] and "events" not in runs[0]
    async with client.get("/runs?agent_id=agent-1") as r:
        assert len((await r.json())["runs"]) == 1
    async with client.get("/runs?agent_id=other") as r:
        assert (await r.json())["runs"] == []
    async with client.get(f"/runs/{run_id}/stream") as r:
        frames = await read_sse(r)
    assert frames[0] == ("run_id", {"runId": run_id, "status": "success"})
    assert [d["message"] for k, d in frames if k == "trace" and d["type"] == "stdout"] == ["one", "two"]
    assert frames[-1][1]["outcome"] == "success"
    bob = Client(client.server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    try:
        await bob.login("bob")
        async with bob.get("/runs") as r:
            assert (await r.json())["runs"] == []
        for method, path in (("GET", f"/runs/{run_id}"), ("GET", f"/runs/{run_id}/stream"),
                             ("POST", f"/runs/{run_id}/stop"), ("GET", "/runs/unknown")):
            async with bob.request(method, path) as r:
                assert r.status == 404 and await r.json() == {"detail": "Run not found"}
    finally:
        await bob.session.close()


async def test_stopping_a_run_kills_it_and_marks_it_stopped(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/agents/run-code/start", json=body(SLEEPER)) as r:
        run_id = (await r.json())["runId"]
    # follow it live: the stream ends when the run is stopped
    async with client.get(f"/runs/{run_id}/stream") as stream:
        first = await read_sse(stream, until="trace")
        assert first[0][0] == "run_id"
        async with client.post(f"/runs/{run_id}/stop") as r:
            assert r.status == 202
            assert await r.json() == {"runId": run_id, "status": "stopping", "via": "flipped_local"}
        frames = await read_sse(stream)
    assert frames[-1][1]["outcome"] == "stopped"
    doc = await wait_status(client, run_id)
    assert doc["status"] == "stopped" and doc["completedAt"]


async def test_a_stream_client_that_goes_away_stops_its_run(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/agents/run-code/stream", json=body(SLEEPER)) as r:
        frames = await read_sse(r, until="trace")
        run_id = frames[0][1]["runId"]
        r.close()  # the browser tab closes
    doc = await wait_status(client, run_id)
    assert doc["status"] == "stopped"


async def test_an_idle_stream_sends_heartbeat_comments(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from gofannon.web import runs as runs_routes

    monkeypatch.setattr(runs_routes, "HEARTBEAT_AFTER_S", 0.2)
    monkeypatch.setattr(runs_routes, "POLL_S", 0.1)
    client = await serve()
    await client.login("alice")
    async with client.post("/agents/run-code/stream", json=body(SLEEPER)) as r:
        frames = await read_sse(r, until="comment")
        assert frames[-1] == ("comment", "heartbeat")
        run_id = frames[0][1]["runId"]
    async with client.post(f"/runs/{run_id}/stop") as r:
        assert r.status == 202


async def test_run_records_past_their_retention_are_deleted(serve: Any) -> None:
    from gofannon.services.runs import evict_expired
    from gofannon.web.keys import KERNEL

    client = await serve(GOFANNON_RUN_RETENTION_HOURS="1")
    await client.login("alice")
    async with client.post("/agents/run-code/start", json=body(PRINTER)) as r:
        fresh = (await r.json())["runId"]
    await wait_status(client, fresh)
    kernel = client.server.app[KERNEL]
    old = {"runId": "old-run", "ownerId": "dev_stub:alice", "status": "success",
           "startedAt": "2020-01-01T00:00:00.000000", "completedAt": "2020-01-01T00:00:01.000000",
           "agentName": "sandbox_agent"}
    await kernel.store.put("gofannon_runs", "old-run", old)
    assert await evict_expired(kernel) == 1
    async with client.get("/runs") as r:
        assert [x["runId"] for x in (await r.json())["runs"]] == [fresh]


async def test_a_run_left_running_by_a_dead_process_ends_as_an_error(serve: Any) -> None:
    from gofannon.services.runs import fail_abandoned
    from gofannon.web.keys import KERNEL

    client = await serve()
    await client.login("alice")
    kernel = client.server.app[KERNEL]
    await kernel.store.put("gofannon_runs", "orphan", {
        "runId": "orphan", "ownerId": "dev_stub:alice", "status": "running", "agentName": "sandbox_agent",
        "startedAt": "2020-01-01T00:00:00.000000", "completedAt": None})
    assert await fail_abandoned(kernel) == 1
    async with client.get("/runs/orphan") as r:
        doc = await r.json()
    assert doc["status"] == "error" and doc["error"].startswith("Run interrupted") and doc["completedAt"]
