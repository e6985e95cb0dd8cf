"""POST /agents/run-code over HTTP: results, failures as 200, schema warnings, data store, nested agents."""

from __future__ import annotations

import textwrap
from typing import Any

from test_agents_crud import create


def code(body: str) -> str:
    return textwrap.dedent(body).strip() + "\n"


async def run(client: Any, source: str, input_dict: Any = None, **extra: Any) -> dict[str, Any]:
    body = {"code": source, "inputDict": {} if input_dict is None else input_dict, "tools": {}, **extra}
    async with client.post("/agents/run-code", json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def test_run_code_returns_the_result_and_a_trace(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    out = await run(client, code("""
        HELPER = 'shared'
        async def run(input_dict, tools):
            print('hi')
            return {'outputText': input_dict['inputText'].upper() + HELPER}
    """), {"inputText": "abc"})
    assert list(out) == ["result", "error", "schemaWarnings", "opsLog", "trace"]
    assert out["result"] == {"outputText": "ABCshared"} and out["error"] is None
    assert out["schemaWarnings"] is None and out["opsLog"] is None
    types = [e["type"] for e in out["trace"]]
    assert types[0] == "agent_start" and types[-1] == "agent_end" and "stdout" in types
    stdout = next(e for e in out["trace"] if e["type"] == "stdout")
    assert stdout["message"] == "hi" and stdout["agent_name"] == "sandbox_agent" and stdout["ts"].endswith("+00:00")


async def test_agent_failures_answer_200_with_the_error(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    out = await run(client, "async def run(input_dict, tools):\n    raise RuntimeError('boom')\n")
    assert out["result"] is None and out["error"] == "RuntimeError: boom"
    assert any(e["type"] == "error" for e in out["trace"])
    out = await run(client, "def run(input_dict, tools):\n    return 1\n")
    assert out["error"] == "ValueError: Code did not define an 'async def run(input_dict, tools)' function."
    out = await run(client, "async def run(input_dict, tools)\n")
    assert out["error"].startswith("SyntaxError")


async def test_missing_required_fields_are_422(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    async with client.post("/agents/run-code", json={"code": "x"}) as r:
        assert r.status == 422
        locs = [d["loc"] for d in (await r.json())["detail"]]
        assert ["body", "inputDict"] in locs and ["body", "tools"] in locs


async def test_schema_warnings_use_the_reference_sentences(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    source = "async def run(input_dict, tools):\n    return input_dict['out']\n"
    schema = {"outputText": "string", "count": "integer", "ratio": "float", "flag": "boolean", "other": "string"}
    out = await run(client, source, {"out": {"outputText": 5, "count": True, "ratio": 1, "flag": True, "zzz": 1}},
                    outputSchema=schema)
    assert out["schemaWarnings"] == [
        "Missing required output keys: ['other']",
        "Unexpected output keys not in schema: ['zzz']. The composer LLM may have ignored the output schema"
        " — try regenerating the code, or update the schema.",
        "Output 'outputText' has type int but schema declares string.",
        "Output 'count' is a boolean but schema declares integer.",
    ]
    out = await run(client, source, {"out": "text"}, outputSchema={"outputText": "string"})
    assert out["schemaWarnings"] == ["Output is not a dict (got str). Expected keys: ['outputText']."]
    assert out["result"] == "text"


async def test_data_store_calls_are_scoped_to_the_user_and_logged(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    out = await run(client, code("""
        async def run(input_dict, tools):
            data_store.set('k', {'v': 1})
            notes = data_store.use_namespace('notes')
            notes.set('a', 'x')
            return {'got': data_store.get('k'), 'missing': data_store.get('nope', 'dflt'),
                    'keys': notes.list_keys()}
    """), friendlyName="keeper")
    assert out["result"] == {"got": {"v": 1}, "missing": "dflt", "keys": ["a"]}
    ops = [(e["op"], e["namespace"], e["agent"], e.get("key")) for e in out["opsLog"]]
    assert ops == [("set", "default", "keeper", "k"), ("set", "notes", "keeper", "a"),
                   ("get", "default", "keeper", "k"), ("get", "default", "keeper", "nope"), ]\
        + [("list_keys", "notes", "keeper", None)]
    assert out["opsLog"][0]["valuePreview"] == '{"v": 1}'
    # bob's data store is his own
    async with client.get("/data-store/namespaces/default/records/k") as r:
        assert r.status == 200
    bob = type(client)(client.server, __import__("aiohttp").ClientSession(
        cookie_jar=__import__("aiohttp").CookieJar(unsafe=True)))
    try:
        await bob.login("bob")
        out = await run(bob, "async def run(input_dict, tools):\n    return data_store.get('k')\n")
        assert out["result"] is None
    finally:
        await bob.session.close()


async def test_gofannon_client_calls_listed_agents_with_a_nested_trace(serve: Any) -> None:
    client = await serve()
    await client.login("alice")
    helper = await create(client, name="doubler", friendlyName="doubler", code=code("""
        async def run(input_dict, tools):
            print('doubling')
            return {'n': input_dict['n'] * 2}
    """))
    source = code("""
        async def run(input_dict, tools):
            first = await gofannon_client.call(agent_name='doubler', input_dict={'n': 21})
            try:
                await gofannon_client.call(agent_name='stranger', input_dict={})
            except Exception as exc:
                return {'first': first, 'error': str(exc)}
    """)
    out = await run(client, source, gofannonAgents=[helper["_id"]])
    assert out["error"] is None, out
    assert out["result"]["first"] == {"n": 42}
    assert "Gofannon agent 'stranger' not found or not imported for this run." in out["result"]["error"]
    nested = [e for e in out["trace"] if e.get("agent_name") == "doubler"]
    assert any(e["type"] == "agent_start" and e["depth"] == 1 for e in nested)
    assert any(e["type"] == "stdout" and e["message"] == "doubling" for e in nested)
    out = await run(client, source, gofannonAgents=["no-such-agent"])
    assert out["error"] == "ValueError: Could not load one or more dependent Gofannon agents."


async def test_recursion_is_bounded_by_the_depth_limit(serve: Any) -> None:
    client = await serve(GOFANNON_SANDBOX_MAX_DEPTH="2")
    await client.login("alice")
    loop = await create(client, name="loop", friendlyName="loop", code=code("""
        async def run(input_dict, tools):
            return await gofannon_client.call(agent_name='loop', input_dict={})
    """))
    async with client.put(f"/agents/{loop['_id']}", json={"gofannonAgents": [loop["_id"]]}) as r:
        assert r.status == 200
    out = await run(client, "async def run(input_dict, tools):\n    return await gofannon_client.call("
                            "agent_name='loop', input_dict={})\n", gofannonAgents=[loop["_id"]])
    assert out["result"] is None
    assert "depth limit" in out["error"]


async def test_env_vars_reach_the_agent_but_server_secrets_do_not(serve: Any) -> None:
    client = await serve(OPENAI_API_KEY="sk-server-secret-value-123456")
    await client.login("alice")
    out = await run(client, code("""
        import os
        async def run(input_dict, tools):
            return {'mine': os.environ.get('MY_VAR'), 'server': os.environ.get('OPENAI_API_KEY')}
    """), envVars=[{"key": "MY_VAR", "value": "hello"}])
    assert out["result"] == {"mine": "hello", "server": None}


async def test_mcp_tools_are_called_through_the_host(serve: Any, mcp_server: Any) -> None:
    client = await serve()
    await client.login("alice")
    url = mcp_server.url("/mcp")
    out = await run(client, code("""
        from agent_factory.remote_mcp_client import RemoteMCPClient

        async def run(input_dict, tools):
            mcpc = {url: RemoteMCPClient(remote_url=url) for url in tools}
            client = mcpc[input_dict['url']]
            names = sorted(t.name for t in await client.list_tools())
            added = await client.call(tool_name='add', a=2, b=3)
            try:
                await client.call(tool_name='fail', reason='on purpose')
            except Exception as exc:
                failed = str(exc)
            return {'names': names, 'sum': added.data, 'failed': failed}
    """), {"url": url}, tools={url: ["add", "fail"]})
    assert out["error"] is None, out
    assert {"add", "echo", "fail", "shout"} <= set(out["result"]["names"])
    assert out["result"]["sum"] == 5 and "fail" in out["result"]["failed"]


async def test_refused_addresses_reach_the_agent_as_an_error(serve: Any) -> None:
    client = await serve(GOFANNON_OUTBOUND_ALLOW="none")
    await client.login("alice")
    out = await run(client, code("""
        async def run(input_dict, tools):
            try:
                await http_client.get('http://127.0.0.1:9/secret')
            except Exception as exc:
                return {'refused': type(exc).__name__ + ': ' + str(exc)}
            return {'refused': None}
    """))
    assert out["error"] is None, out
    assert "refused" in out["result"]["refused"].lower()


async def test_llm_calls_show_tokens_and_cost_in_the_trace(serve: Any, fake_openai: Any) -> None:
    from fakes import Reply

    client = await serve(**fake_openai.env)
    await client.login("alice")
    fake_openai.script(Reply("forty-two", input_tokens=120, output_tokens=30))
    out = await run(client, code("""
        from services.llm_service import call_llm

        async def run(input_dict, tools):
            content, thoughts = await call_llm(provider='openai', model='gpt-5.1-codex-mini',
                                               messages=[{'role': 'user', 'content': 'answer?'}],
                                               parameters={'temperature': 0.7})
            return {'outputText': content}
    """), llmSettings={"perModel": {"openai/gpt-5.1-codex-mini": {"temperature": 0.2}}})
    assert out["result"] == {"outputText": "forty-two"}, out
    assert fake_openai.requests[-1].json["temperature"] == 0.2
    call = next(e for e in out["trace"] if e["type"] == "llm_call")
    assert call["provider"] == "openai" and call["model"] == "gpt-5.1-codex-mini" and call["error"] is None
    assert call["input_tokens"] == 120 and call["output_tokens"] == 30
    assert call["cost_usd"] is not None and call["cost_usd"] >= 0
