"""A saved demo opened in a real headless Chromium: clicking its button calls a deployed agent through /rest.

Chromium is driven over the DevTools protocol (its websocket) with aiohttp; no browser library is needed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
from fakes import FakeLLMServer, Reply
from yarl import URL

pytestmark = pytest.mark.timeout(180)

AGENT_CODE = (
    "async def run(input_dict, tools):\n"
    "    return {'outputText': input_dict['inputText'].upper() + '!'}\n"
)
DEMO_CODE = {
    "html": "<h1>Shouter</h1><input id='text' value='hello browser'><button id='go'>Shout</button>"
            "<p id='out'>waiting</p>",
    "css": "#out { font-weight: bold; }",
    "js": (
        "document.getElementById('go').addEventListener('click', async () => {\n"
        "  const out = document.getElementById('out');\n"
        "  try {\n"
        "    const r = await fetch(`${API_BASE_URL}/rest/shouter`, {method: 'POST', credentials: 'include',\n"
        "      headers: {'Content-Type': 'application/json'},\n"
        "      body: JSON.stringify({inputText: document.getElementById('text').value})});\n"
        "    const data = await r.json();\n"
        "    out.textContent = r.ok ? data.outputText : ('error ' + r.status + ': ' + JSON.stringify(data));\n"
        "  } catch (e) { out.textContent = 'failed: ' + e; }\n"
        "});\n"
    ),
}


class Browser:
    """Headless Chromium with a fresh profile, and one page driven through the DevTools protocol."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--remote-debugging-port=0",
             "--remote-debugging-address=127.0.0.1"]

    def __init__(self, exe: str, profile: Path) -> None:
        self.exe, self.profile = exe, profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def start(self) -> "Browser":
        self.proc = subprocess.Popen([self.exe, *self.FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        for _ in range(600):
            if port_file.exists() and port_file.read_text().strip():
                break
            if self.proc.poll() is not None:
                raise RuntimeError("chromium exited during start-up")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("chromium did not open its DevTools port")
        port = int(port_file.read_text().split()[0])
        self.http = aiohttp.ClientSession()
        for _ in range(200):
            try:
                async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [t for t in await r.json() if t.get("type") == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("chromium has no page target")
        self.ws = await self.http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        msg_id = next(self._ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, attempts: int = 400) -> Any:
        """Poll a JS expression until it is truthy (bounded; a wait, not a timing assertion)."""
        for _ in range(attempts):
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"never became true: {expression}")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed; run scripts/test.sh, which installs it")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    b = Browser(exe, profile)
    try:
        yield await b.start()
    finally:
        await b.close()


async def test_demo_page_button_calls_the_deployed_agent_and_shows_its_answer(
    serve: Callable[..., Any], fake_openai: FakeLLMServer, browser: Browser
) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    agent = {"name": "shouter", "friendlyName": "shouter", "description": "Shouts the text", "code": AGENT_CODE,
             "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}
    async with client.post("/agents", json=agent) as r:
        assert r.status == 201, await r.text()
        agent_id = (await r.json())["_id"]
    async with client.post(f"/agents/{agent_id}/deploy") as r:
        assert r.status == 201, await r.text()
    async with client.get("/deployments") as r:
        apis = [d for d in await r.json() if d["friendlyName"] == "shouter"]

    fake_openai.script(Reply(json.dumps(DEMO_CODE)))
    composer = {"provider": "openai", "model": "gpt-5-mini", "parameters": {}}
    async with client.post("/demos/generate-code", json={
        "userPrompt": "A button that shouts my text", "selectedApis": apis, "modelConfig": composer}) as r:
        assert r.status == 200, await r.text()
        generated = await r.json()
    async with client.post("/demos", json={
        "name": "Shouter demo", "selectedApis": apis, "modelConfig": composer,
        "userPrompt": "A button that shouts my text", "generatedCode": generated}) as r:
        assert r.status == 201, await r.text()
        demo_id = (await r.json())["_id"]

    # The browser carries alice's session, as it would after signing in.
    base = URL(client.url("/"))
    sid = client.session.cookie_jar.filter_cookies(base)["gofannon_sid"].value
    await browser.send("Network.setCookie", name="gofannon_sid", value=sid, url=str(base), httpOnly=True)
    await browser.send("Page.navigate", url=client.url(f"/demos/{demo_id}/app"))
    await browser.wait_for("document.readyState === 'complete' && !!document.getElementById('go')")
    assert await browser.evaluate("document.title") == "Shouter demo"
    await browser.evaluate("document.getElementById('go').click()")
    shown = await browser.wait_for(
        "(t => t !== 'waiting' && t)(document.getElementById('out').textContent)")
    assert shown == "HELLO BROWSER!"


GENERATED_BODY = (
    "a, b = (int(x) for x in input_dict['inputText'].split())\n"
    "result = await mcpc[list(tools)[0]].call(tool_name='add', a=a, b=b)\n"
    "return {'outputText': str(result.data)}\n"
)
ADDER_DEMO = dict(DEMO_CODE, html=DEMO_CODE["html"].replace("hello browser", "2 40"),
                  js=DEMO_CODE["js"].replace("/rest/shouter", "/rest/add_numbers"))


async def test_agent_generated_with_an_mcp_tool_runs_deploys_and_powers_a_demo_in_the_browser(
    serve: Callable[..., Any], fake_openai: FakeLLMServer, mcp_server: Any, browser: Browser
) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    composer = {"provider": "openai", "model": "gpt-5-mini", "parameters": {}}
    tools = {mcp_server.url("/mcp"): ["add"]}
    fake_openai.respond(lambda req: Reply(
        json.dumps({"friendly_name": "add_numbers", "docstring": "Adds two numbers."})
        if "docstrings in JSON format" in json.dumps(req.json) else f"```python\n{GENERATED_BODY}```"))
    async with client.post("/agents/generate-code", json={
        "tools": tools, "description": "Add the two numbers in the text with the MCP add tool",
        "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"},
        "modelConfig": composer}) as r:
        assert r.status == 200, await r.text()
        generated = await r.json()
    fake_openai.respond(None)

    async with client.post("/agents/run-code", json={
        "code": generated["code"], "inputDict": {"inputText": "2 40"}, "tools": tools}) as r:
        ran = await r.json()
    assert ran["error"] is None and ran["result"] == {"outputText": "42"}, ran

    async with client.post("/agents", json={
        "name": generated["friendlyName"], "friendlyName": generated["friendlyName"], "description": "adds",
        "docstring": generated["docstring"], "code": generated["code"], "tools": tools,
        "inputSchema": {"inputText": "string"}, "outputSchema": {"outputText": "string"}}) as r:
        assert r.status == 201, await r.text()
        agent_id = (await r.json())["_id"]
    async with client.post(f"/agents/{agent_id}/deploy") as r:
        assert r.status == 201, await r.text()
    async with client.post("/rest/add_numbers", json={"inputText": "2 40"}) as r:
        assert r.status == 200 and await r.json() == {"outputText": "42"}

    async with client.get("/deployments") as r:
        apis = [d for d in await r.json() if d["friendlyName"] == "add_numbers"]
    fake_openai.script(Reply(json.dumps(ADDER_DEMO)))
    async with client.post("/demos/generate-code", json={
        "userPrompt": "A button that adds", "selectedApis": apis, "modelConfig": composer}) as r:
        assert r.status == 200, await r.text()
        demo_code = await r.json()
    async with client.post("/demos", json={
        "name": "Adder", "selectedApis": apis, "modelConfig": composer, "userPrompt": "A button that adds",
        "generatedCode": demo_code}) as r:
        demo_id = (await r.json())["_id"]

    base = URL(client.url("/"))
    sid = client.session.cookie_jar.filter_cookies(base)["gofannon_sid"].value
    await browser.send("Network.setCookie", name="gofannon_sid", value=sid, url=str(base), httpOnly=True)
    await browser.send("Page.navigate", url=client.url(f"/demos/{demo_id}/app"))
    await browser.wait_for("document.readyState === 'complete' && !!document.getElementById('go')")
    await browser.evaluate("document.getElementById('go').click()")
    shown = await browser.wait_for("(t => t !== 'waiting' && t)(document.getElementById('out').textContent)")
    assert shown == "42"
