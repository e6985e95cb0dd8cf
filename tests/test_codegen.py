"""POST /agents/generate-code against the fake OpenAI server, a real MCP server and a real spec server."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

import pytest
from conftest import free_port
from fakes import FakeLLMServer, Recorded, Reply
from fakes.mcp_server import McpServerProcess
from fakes.openapi_server import SpecServer

from gofannon.services import codegen

pytestmark = pytest.mark.timeout(120)

COMPOSER = {"provider": "openai", "model": "gpt-5-mini", "parameters": {"reasoning_effort": "disable"}}
BODY = 'total = await mcpc[list(tools)[0]].call(tool_name="add", a=1, b=2)\nreturn {"outputText": str(total.data)}'
NAME_JSON = json.dumps({"friendly_name": "add numbers", "docstring": "Adds two numbers with the MCP tool."})


def is_name_call(req: Recorded) -> bool:
    return "docstrings in JSON format" in json.dumps(req.json)


def system_prompt(req: Recorded) -> str:
    messages = (req.json or {}).get("messages") or []
    return next((m["content"] for m in messages if m.get("role") == "system"), "")


def answer(code: str | list[str], name: str = NAME_JSON) -> Callable[[Recorded], Reply]:
    codes = [code] if isinstance(code, str) else list(code)

    def respond(req: Recorded) -> Reply:
        if is_name_call(req):
            return Reply(name)
        return Reply(codes.pop(0) if len(codes) > 1 else codes[0], thoughts="planned the body")

    return respond


@pytest.fixture
async def specs() -> AsyncIterator[SpecServer]:
    async with SpecServer() as server:
        yield server


@pytest.fixture
async def alice(serve: Callable[..., Any], fake_openai: FakeLLMServer) -> Any:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    return client


def request_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tools": {}, "description": "Add two numbers", "inputSchema": {"inputText": "string"},
        "outputSchema": {"outputText": "string"}, "modelConfig": COMPOSER,
    }
    body.update(over)
    return body


async def generate(client: Any, body: dict[str, Any]) -> tuple[int, Any]:
    async with client.post("/agents/generate-code", json=body) as r:
        return r.status, await r.json()


async def test_generated_agent_uses_live_mcp_tools_specs_and_models(
    alice: Any, fake_openai: FakeLLMServer, mcp_server: McpServerProcess, specs: SpecServer
) -> None:
    fake_openai.respond(answer(f"```python\n{BODY}\n```"))
    spec_text = json.dumps(specs.openapi_doc())
    status, body = await generate(alice, request_body(
        tools={mcp_server.url("/mcp"): ["add"]},
        swaggerSpecs=[{"name": "pets.json", "content": spec_text}],
        invokableModels=[{"provider": "openai", "model": "gpt-5.2", "parameters": {"reasoning_effort": "low"},
                          "builtInTool": "web_search"}],
    ))
    assert status == 200, body
    assert set(body) == {"code", "friendlyName", "docstring", "thoughts"}
    code = body["code"]
    assert code.startswith("from agent_factory.remote_mcp_client import RemoteMCPClient\n"
                           "from services.llm_service import call_llm\nimport httpx\n")
    assert "    mcpc = {url: RemoteMCPClient(remote_url=url) for url in tools}" in code
    assert '        return {"outputText": str(total.data)}' in code
    assert "```" not in code and codegen.code_problem(code) is None
    assert body["friendlyName"] == "add_numbers"
    assert body["docstring"] == "Adds two numbers with the MCP tool."
    assert body["thoughts"] is not None

    code_calls = [r for r in fake_openai.requests if not is_name_call(r)]
    assert len(code_calls) == 1 and len(fake_openai.requests) == 2
    prompt = system_prompt(code_calls[0])
    assert "MCP tool `add`" in prompt and f"mcpc['{mcp_server.url('/mcp')}'].call(tool_name='add'" in prompt
    assert "MCP tool `echo`" not in prompt  # only the selected tools
    assert "listPets" in prompt and f"GET {specs.base}/pets" in prompt
    assert "openai/gpt-5.2" in prompt and "400000 tokens" in prompt and "web_search" in prompt
    assert '"outputText": "string"' in prompt


async def test_both_generation_calls_are_charged(alice: Any, fake_openai: FakeLLMServer) -> None:
    fake_openai.respond(answer(BODY))
    status, _ = await generate(alice, request_body())
    assert status == 200
    async with alice.get("/users/me/usage") as r:
        usage = (await r.json())["usage"]
    assert len(usage) == 2


async def test_code_that_does_not_compile_is_repaired_by_a_second_round(
    alice: Any, fake_openai: FakeLLMServer
) -> None:
    fake_openai.respond(answer(["result = (1 +\nreturn result", 'return {"outputText": "fixed"}']))
    status, body = await generate(alice, request_body())
    assert status == 200, body
    assert '        return {"outputText": "fixed"}' in body["code"]
    repair = [r for r in fake_openai.requests if not is_name_call(r)][-1]
    assert "SyntaxError" in json.dumps(repair.json)
    assert len(fake_openai.requests) == 3


async def test_code_still_broken_after_repair_is_a_502(alice: Any, fake_openai: FakeLLMServer) -> None:
    fake_openai.respond(answer("def oops(:"))
    status, body = await generate(alice, request_body())
    assert status == 502
    assert "repair" in body["detail"] and "SyntaxError" in body["detail"]


async def test_a_whole_module_from_the_model_is_accepted(alice: Any, fake_openai: FakeLLMServer) -> None:
    module = "import httpx\n\nasync def run(input_dict, tools):\n    return {'outputText': input_dict['inputText']}\n"
    fake_openai.respond(answer(module))
    status, body = await generate(alice, request_body())
    assert status == 200
    assert codegen.code_problem(body["code"]) is None
    assert body["code"].count("import httpx") == 1


async def test_unparsable_name_answer_falls_back_to_the_reference_names(
    alice: Any, fake_openai: FakeLLMServer
) -> None:
    fake_openai.respond(answer(BODY, name="I think a good name is adder"))
    status, body = await generate(alice, request_body())
    assert status == 200
    assert body["friendlyName"] == "parsing_error_function"
    assert body["docstring"].startswith("Could not parse docstring from LLM response:\nI think")
    fake_openai.respond(answer(BODY, name="```json\n{}\n```"))
    status, body = await generate(alice, request_body())
    assert (body["friendlyName"], body["docstring"]) == ("unnamed_agent_function", "No docstring generated.")


async def test_exhausted_allowance_answers_402(alice: Any, fake_openai: FakeLLMServer) -> None:
    async with alice.put("/users/me/spend-remaining", json={"spendRemaining": 0.5}) as r:
        assert r.status == 200
    status, body = await generate(alice, request_body())
    assert status == 402
    assert body["detail"] == "Insufficient spend allowance to complete request"
    assert fake_openai.requests == []


async def test_provider_failure_is_a_502_with_a_detail(alice: Any, fake_openai: FakeLLMServer) -> None:
    fake_openai.respond(lambda req: Reply(status=400, error="the model refuses this request"))
    status, body = await generate(alice, request_body())
    assert status == 502
    assert body["detail"]


async def test_unreachable_mcp_server_is_a_502_before_any_model_call(
    alice: Any, fake_openai: FakeLLMServer
) -> None:
    status, body = await generate(alice, request_body(tools={f"http://127.0.0.1:{free_port()}/mcp": []}))
    assert status == 502 and "MCP" in body["detail"]
    assert fake_openai.requests == []


async def test_missing_fields_are_a_422(alice: Any) -> None:
    status, body = await generate(alice, {"description": "x"})
    assert status == 422
    missing = {tuple(e["loc"]) for e in body["detail"]}
    assert ("body", "tools") in missing and ("body", "modelConfig") in missing


async def test_prompt_lists_own_agents_and_skips_other_users_private_ones(
    serve: Callable[..., Any], fake_openai: FakeLLMServer
) -> None:
    bob = await serve(**fake_openai.env)
    await bob.login("bob")
    agent = {"name": "bobs_secret", "description": "private", "code": "async def run(input_dict, tools):\n  return {}"}
    async with bob.post("/agents", json=agent) as r:
        assert r.status == 201
        bobs_id = (await r.json())["_id"]
    alice = bob  # same server, new identity
    await alice.login("alice")
    async with alice.post("/agents", json=dict(agent, name="summarizer", description="Summarises text")) as r:
        own_id = (await r.json())["_id"]
    fake_openai.respond(answer(BODY))
    status, _ = await generate(alice, request_body(gofannonAgents=[own_id, bobs_id]))
    assert status == 200
    prompt = system_prompt([r for r in fake_openai.requests if not is_name_call(r)][0])
    assert "Gofannon agent `summarizer`" in prompt and "gofannon_client.call(agent_name='summarizer'" in prompt
    assert "bobs_secret" not in prompt


def test_post_processing_strips_fences_and_wraps_the_body() -> None:
    code = codegen.wrap_body("Here you go:\n```python\nx = 1\nreturn {'v': x}\n```\nEnjoy!")
    assert "        x = 1\n        return {'v': x}\n    finally:\n        await http_client.aclose()\n" in code
    assert codegen.code_problem(code) is None
    assert codegen.code_problem("def run(input_dict, tools):\n    pass\n") == "run must be declared with 'async def'"
    assert codegen.sanitize_name("3 little pigs!") == "_3_little_pigs"


async def test_composer_built_in_tools_are_given_to_the_code_call(alice: Any, fake_openai: FakeLLMServer) -> None:
    fake_openai.respond(answer(BODY))
    composer = {"provider": "openai", "model": "gpt-5.2", "parameters": {}}
    status, body = await generate(alice, request_body(modelConfig=composer, builtInTools=["web_search", "nope"]))
    assert status == 200, body
    code_call = next(r for r in fake_openai.requests if r.method == "POST" and not is_name_call(r))
    assert {"type": "web_search", "search_context_size": "medium"} in code_call.json["tools"]
