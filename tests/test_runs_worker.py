"""With REDIS_URL, agent runs execute in a real `gofannon worker`; events and stop travel through Redis."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from test_agents_crud import create
from test_runs import PRINTER, SLEEPER, body, read_sse, wait_status


@pytest.fixture
def shared_env(rq_worker: Any) -> dict[str, str]:
    """A real worker process sharing Redis and the SQLite store with the API under test."""
    return rq_worker(GOFANNON_QUEUE=f"runs-{os.getpid()}-{time.monotonic_ns()}")


async def test_run_code_and_rest_are_answered_by_the_worker(serve: Any, shared_env: dict[str, str]) -> None:
    client = await serve(**shared_env)
    await client.login("alice")
    source = "import os\nasync def run(input_dict, tools):\n    return {'pid': os.getpid(), 'x': input_dict['x']}\n"
    async with client.post("/agents/run-code", json={"code": source, "inputDict": {"x": 1}, "tools": {}}) as r:
        out = await r.json()
    assert out["result"]["x"] == 1 and out["error"] is None
    doc = await create(client, friendlyName="via_worker", code=source)
    async with client.post(f"/agents/{doc['_id']}/deploy") as r:
        assert r.status == 201
    async with client.post("/rest/via_worker", json={"x": 2}) as r:
        assert r.status == 200 and (await r.json())["x"] == 2


async def test_streams_replay_and_stop_work_across_processes(serve: Any, shared_env: dict[str, str]) -> None:
    client = await serve(**shared_env)
    await client.login("alice")
    async with client.post("/agents/run-code/stream", json=body(PRINTER)) as r:
        frames = await read_sse(r)
    assert [d["message"] for k, d in frames if k == "trace" and d["type"] == "stdout"] == ["one", "two"]
    assert frames[-1][1]["outcome"] == "success"
    run_id = frames[0][1]["runId"]
    doc = await wait_status(client, run_id)
    assert doc["status"] == "success" and doc["result"] == {"outputText": "done"}
    # a second API process (same Redis, same store) replays it
    other = await serve(**shared_env)
    await other.login("alice")
    async with other.get(f"/runs/{run_id}/stream") as r:
        replay = await read_sse(r)
    assert replay[-1][1]["outcome"] == "success"
    # stop a run the worker is executing, from the API
    async with client.post("/agents/run-code/start", json=body(SLEEPER)) as r:
        run_id = (await r.json())["runId"]
    async with other.get(f"/runs/{run_id}/stream") as stream:
        await read_sse(stream, until="trace")
        async with client.post(f"/runs/{run_id}/stop") as r:
            assert r.status == 202
            assert (await r.json())["via"] == "persisted_remote"
        frames = await read_sse(stream)
    assert frames[-1][1]["outcome"] == "stopped"
    assert (await wait_status(client, run_id))["status"] == "stopped"


async def test_a_running_worker_run_shows_its_events_so_far(serve: Any, shared_env: dict[str, str]) -> None:
    client = await serve(**shared_env)
    await client.login("alice")
    async with client.post("/agents/run-code/start", json=body(SLEEPER)) as r:
        run_id = (await r.json())["runId"]
    async with client.get(f"/runs/{run_id}/stream") as stream:
        await read_sse(stream, until="trace")
        async with client.get(f"/runs/{run_id}") as r:
            doc = await r.json()
        assert doc["status"] == "running" and doc["events"][0]["type"] == "agent_start"
        async with client.post(f"/runs/{run_id}/stop") as r:
            assert r.status == 202
        await read_sse(stream)

