"""The reference web UI's ordinary session, replayed in order over HTTP against the kernel.

A browser loads the app from GOFANNON_UI_DIR, signs in through the dev_stub flow, browses, creates an agent,
looks at its chain and deployment, deploys it, runs it in the sandbox over SSE, looks at the runs, demos, data
stores, providers and API keys, sends its client logs, and signs out. Every call answers as the wire contract
says; none answers 4xx/5xx except ``GET /auth/me`` while signed out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
           "Sec-Fetch-Mode": "navigate"}
FETCH = {"Accept": "*/*"}
JSON = {"Accept": "application/json"}
INDEX = "<!doctype html><html><body><div id=root></div><script src=/assets/index-5e1d.js></script></body></html>"

AGENT_CODE = '''
async def run(input_dict, tools):
    text = input_dict["inputText"]
    data_store.set("last-input", text)
    print("shouting", text)
    return {"outputText": text.upper()}
'''


@pytest.fixture
def ui_dir(tmp_path: Path) -> Path:
    ui = tmp_path / "dist"
    (ui / "assets").mkdir(parents=True)
    (ui / "index.html").write_text(INDEX)
    (ui / "assets" / "index-5e1d.js").write_text("console.log('ui')")
    return ui


def sse_frames(text: str) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs of an SSE body (comments such as ``: heartbeat`` skipped)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            out.append((event, json.loads("\n".join(data))))
    return out


class Session:
    """Calls made in order, each remembered with its status for the final check."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, str, int]] = []

    async def call(self, method: str, path: str, *, expect: int, headers: dict[str, str] | None = None,
                   json_body: Any = None) -> tuple[Any, Any]:
        kw: dict[str, Any] = {"headers": headers or FETCH}
        if json_body is not None:
            kw["json"] = json_body
        async with self.client.request(method, path, **kw) as r:
            body = await r.read()
            self.calls.append((method, path, r.status))
            assert r.status == expect, f"{method} {path} -> {r.status}: {body[:500]!r}"
            ctype = r.headers.get("Content-Type", "")
            data: Any = body.decode()
            if ctype.startswith("application/json") and body:
                data = json.loads(body)
            return data, r.headers


async def test_the_ui_session_works_end_to_end(serve: Callable[..., Any], ui_dir: Path) -> None:
    client = await serve(GOFANNON_UI_DIR=str(ui_dir), GOFANNON_SANDBOX_TIMEOUT_S="30")
    s = Session(client)
    logs_sent = 0

    async def log(event: str) -> None:
        nonlocal logs_sent
        data, _ = await s.call("POST", "/log/client", expect=202, json_body={
            "eventType": event, "message": f"ui {event}", "level": "INFO", "metadata": {"page": event}})
        assert data == {"status": "logged"}
        logs_sent += 1

    # the browser loads the app (a reload of an API-named page included)
    page, headers = await s.call("GET", "/agents", expect=200, headers=BROWSER)
    assert page == INDEX and headers["Content-Type"].startswith("text/html")
    await s.call("GET", "/assets/index-5e1d.js", expect=200)
    await log("app_loaded")

    # signed out: the app asks who is there
    data, headers = await s.call("GET", "/auth/me", expect=401)
    assert data == {"detail": "Not authenticated"}
    providers, _ = await s.call("GET", "/auth/providers", expect=200)
    assert "dev_stub" in json.dumps(providers)
    await log("login_page")

    # the dev_stub login, as a browser follows it
    _, headers = await s.call("GET", "/auth/login/dev_stub?return_to=/agents", expect=302, headers=BROWSER)
    picker_url = headers["Location"]
    html, _ = await s.call("GET", picker_url, expect=200, headers=BROWSER)
    links = {text.strip(): href.replace("&amp;", "&")
             for href, text in re.findall(r'<a[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', html)}
    assert "alice" in links, html
    _, headers = await s.call("GET", links["alice"], expect=302, headers=BROWSER)
    assert headers["Location"] == "http://localhost:3000/agents"  # FRONTEND_URL + return_to
    sid_cookie = next(c for c in headers.getall("Set-Cookie") if c.startswith("gofannon_sid="))
    assert "httponly" in sid_cookie.lower() and "samesite=lax" in sid_cookie.lower()
    assert "gofannon_sid" in {c.key for c in client.session.cookie_jar}
    me, _ = await s.call("GET", "/auth/me", expect=200)
    assert me["uid"] and me["providerType"] == "dev_stub"
    await log("signed_in")

    # browse and create an agent
    agents, _ = await s.call("GET", "/agents", expect=200)
    assert isinstance(agents, list)
    await log("agents_page")
    agent, _ = await s.call("POST", "/agents", expect=201, json_body={
        "name": "shouter", "description": "Upper-cases its input", "code": AGENT_CODE, "friendlyName": "shouter",
        "tools": {}, "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"},
        "gofannonAgents": [], "swaggerSpecs": [], "invokableModels": [],
    })
    agent_id = agent["_id"]
    assert agent["name"] == "shouter" and agent["_rev"]
    await log("agent_saved")
    got, _ = await s.call("GET", f"/agents/{agent_id}", expect=200)
    assert got["code"] == AGENT_CODE
    graph, _ = await s.call("GET", f"/agents/{agent_id}/chain", expect=200)
    assert graph["root"] == agent_id and graph["nodes"][agent_id]["name"] == "shouter" and graph["edges"] == []
    deployment, _ = await s.call("GET", f"/agents/{agent_id}/deployment", expect=200)
    assert deployment == {"is_deployed": False}
    await log("agent_page")

    # deploy it
    deployed, _ = await s.call("POST", f"/agents/{agent_id}/deploy", expect=201)
    assert deployed["endpoint"] == "/rest/shouter"
    deployment, _ = await s.call("GET", f"/agents/{agent_id}/deployment", expect=200)
    assert deployment == {"is_deployed": True, "friendly_name": "shouter"}
    await log("deployed")

    # run it in the sandbox, streamed
    text, headers = await s.call("POST", "/agents/run-code/stream", expect=200, json_body={
        "code": AGENT_CODE, "inputDict": {"inputText": "hello"}, "tools": {}, "gofannonAgents": [],
        "outputSchema": {"outputText": "string"}, "friendlyName": "shouter", "agentId": agent_id,
    })
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-cache" and headers["X-Accel-Buffering"] == "no"
    frames = sse_frames(text)
    assert frames[0][0] == "run_id" and frames[0][1]["status"] == "running"
    run_id = frames[0][1]["runId"]
    assert frames[-1][0] == "done", frames
    done = frames[-1][1]
    assert done["outcome"] == "success" and done["result"] == {"outputText": "HELLO"} and done["error"] is None
    assert [op["op"] for op in done["opsLog"]] == ["set"] and done["opsLog"][0]["key"] == "last-input"
    assert any(f[0] == "trace" for f in frames)
    await log("sandbox_run")

    # deployed APIs and runs
    apis, _ = await s.call("GET", "/deployments", expect=200)
    assert any(a["friendlyName"] == "shouter" and a["agentId"] == agent_id for a in apis)
    runs, _ = await s.call("GET", "/runs", expect=200)
    assert run_id in [r["runId"] for r in runs["runs"]]
    runs, _ = await s.call("GET", f"/runs?agent_id={agent_id}", expect=200)
    assert [r["runId"] for r in runs["runs"]] == [run_id] and runs["runs"][0]["status"] == "success"
    run, _ = await s.call("GET", f"/runs/{run_id}", expect=200)
    assert run["status"] == "success" and run["result"] == {"outputText": "HELLO"} and run["events"]
    text, headers = await s.call("GET", f"/runs/{run_id}/stream", expect=200)
    assert headers["Content-Type"].startswith("text/event-stream")
    replay = sse_frames(text)
    assert replay[-1][0] == "done" and replay[-1][1]["outcome"] == "success"
    await log("runs_page")

    # demos, data stores, providers, profile
    demos, _ = await s.call("GET", "/demos", expect=200)
    assert isinstance(demos, list)
    await log("demos_page")
    stores, _ = await s.call("GET", "/data-store/namespaces", expect=200, headers=JSON)
    default = next(n for n in stores["namespaces"] if n["namespace"] == "default")
    assert default["recordCount"] == 1 and default["agents"] == ["shouter"]
    record, _ = await s.call("GET", "/data-store/namespaces/default/records/last-input", expect=200, headers=JSON)
    assert record["value"] == "hello" and record["createdByAgent"] == "shouter"
    await log("data_stores_page")
    catalog, _ = await s.call("GET", "/providers", expect=200)
    assert isinstance(catalog, dict) and catalog
    keys, _ = await s.call("GET", "/users/me/api-keys", expect=200)
    assert isinstance(keys, dict)
    await log("profile_page")

    # the rest of the page flow's client logs (the UI sends about 40)
    while logs_sent < 40:
        await log(f"interaction_{logs_sent}")

    # sign out
    await s.call("POST", "/auth/logout", expect=204)
    assert "gofannon_sid" not in {c.key for c in client.session.cookie_jar if c.value}
    await s.call("GET", "/auth/me", expect=401)

    failures = [c for c in s.calls if c[2] >= 400 and (c[0], c[1]) != ("GET", "/auth/me")]
    assert failures == []
    assert sum(1 for c in s.calls if c[1] == "/log/client") == 40
