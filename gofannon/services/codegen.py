"""Agent code generation (``POST /agents/generate-code``, wire contract §5.1).

The composer model writes the *body* of ``async def run(input_dict, tools)`` from a system prompt that
documents everything the agent may use (MCP tools listed live, OpenAPI operations, other agents, invokable
models, guides); a second call names the agent. Both calls go through ``call_llm`` as the caller (both are
charged) and run concurrently. The code is wrapped in the reference's header (so saved agents stay
compatible), checked to compile and define ``run``, and sent back to the model once for repair if not.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, Field

from gofannon.errors import GofannonError, UpstreamError
from gofannon.models import WireModel
from gofannon.models.agent import SwaggerSpec
from gofannon.models.provider import ProviderConfig

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

CODE_TIMEOUT_S = 1800.0
DEFAULT_CONTEXT_WINDOW = 128000
NAME_PATTERN = re.compile(r"[^A-Za-z0-9_]+")

HEADER = (
    "from agent_factory.remote_mcp_client import RemoteMCPClient\n"
    "from services.llm_service import call_llm\n"
    "import httpx\n"
    "\n"
    "async def run(input_dict, tools):\n"
    "    mcpc = {url: RemoteMCPClient(remote_url=url) for url in tools}\n"
    "    http_client = httpx.AsyncClient()\n"
    "    try:\n"
)
FOOTER = (
    "    finally:\n"
    "        await http_client.aclose()\n"
)


class GenerateCodeRequest(WireModel):
    tools: dict[str, list[str]]
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    composer: ProviderConfig = Field(validation_alias=AliasChoices("modelConfig", "model_config"),
                                     serialization_alias="modelConfig")
    invokable_models: list[ProviderConfig] | None = None
    swagger_specs: list[SwaggerSpec] = Field(default_factory=list)
    gofannon_agents: list[str] = Field(default_factory=list)
    built_in_tools: list[str] = Field(default_factory=list)


@dataclass
class Generated:
    code: str
    friendly_name: str
    docstring: str
    thoughts: Any

    def wire(self) -> dict[str, Any]:
        return {"code": self.code, "friendlyName": self.friendly_name, "docstring": self.docstring,
                "thoughts": self.thoughts}


# -- prompt sections ------------------------------------------------------------------------------------
def _schema_type(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "any"
    if "type" in spec:
        return str(spec["type"]) if not isinstance(spec["type"], list) else "|".join(map(str, spec["type"]))
    for key in ("anyOf", "oneOf"):
        if isinstance(spec.get(key), list):
            return "|".join(_schema_type(s) for s in spec[key])
    return "any"


def mcp_tool_doc(url: str, tool: dict[str, Any]) -> str:
    schema = tool.get("inputSchema") or {}
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    lines = [f"#### MCP tool `{tool['name']}` on `{url}`", (tool.get("description") or "").strip(), "", "Parameters:"]
    if not props:
        lines.append("- (none)")
    for name, spec in props.items():
        req = "required" if name in required else "optional"
        desc = f": {spec.get('description')}" if isinstance(spec, dict) and spec.get("description") else ""
        lines.append(f"- `{name}` ({_schema_type(spec)}, {req}){desc}")
    args = ", ".join(f"{name}=..." for name in props)
    lines.append("")
    lines.append(f"Example: `result = await mcpc['{url}'].call(tool_name='{tool['name']}'{', ' + args if args else ''})`")
    return "\n".join(lines)


async def _mcp_section(kernel: "Kernel", tools: dict[str, list[str]]) -> list[str]:
    from gofannon.tools import connector

    if not tools:
        return []
    mcp = connector(kernel, "mcp")
    listings = await asyncio.gather(*(mcp.list_tools(kernel, url) for url in tools))
    blocks: list[str] = []
    for (url, wanted), listing in zip(tools.items(), listings):
        chosen = [t for t in listing if not wanted or t["name"] in set(wanted)]
        blocks.extend(mcp_tool_doc(url, t) for t in chosen)
    return blocks


async def _agent_section(kernel: "Kernel", ident: "Identity", agent_ids: list[str]) -> list[str]:
    from gofannon.services.agents import load_usable

    blocks: list[str] = []
    for agent_id in agent_ids:
        found = await load_usable(kernel, ident, [agent_id])
        if not found:
            continue  # missing or not visible to the caller: skipped, as the reference skips failures
        agent = found[0]
        example = json.dumps({k: "..." for k in (agent.get("inputSchema") or {"inputText": "string"})})
        blocks.append("\n".join([
            f"#### Gofannon agent `{agent.get('name')}`",
            f"Description: {agent.get('description') or ''}",
            f"Docstring: {agent.get('docstring') or ''}",
            f"Input schema: {json.dumps(agent.get('inputSchema'))}",
            f"Output schema: {json.dumps(agent.get('outputSchema'))}",
            f"Example: `result = await gofannon_client.call(agent_name='{agent.get('name')}', input_dict={example})`",
        ]))
    return blocks


def _model_section(models: list[ProviderConfig]) -> list[str]:
    from gofannon.llm import catalog

    cat = catalog.active()
    blocks: list[str] = []
    for m in models:
        config = cat.model(m.provider, m.model) or {}
        window = config.get("context_window") or DEFAULT_CONTEXT_WINDOW
        lines = [
            f"#### Model `{m.provider}/{m.model}`",
            f"- Parameters to pass: `{json.dumps(m.parameters)}`",
            f"- Context window: {window} tokens",
        ]
        tool_arg = ""
        if m.built_in_tool:
            tool = next((t for t in config.get("built_in_tools") or [] if t.get("id") == m.built_in_tool), None)
            if tool is not None:
                lines.append(f"- Built-in tool `{tool['id']}`: {tool.get('description') or ''}; pass "
                             f"`tools=[{json.dumps(tool.get('tool_config'))}]`")
                tool_arg = f", tools=[{json.dumps(tool.get('tool_config'))}]"
        lines.append(
            f"- Example: `content, thoughts = await call_llm(provider=\"{m.provider}\", model=\"{m.model}\", "
            f"messages=[{{\"role\": \"user\", \"content\": \"...\"}}], parameters={json.dumps(m.parameters)}{tool_arg})`"
        )
        blocks.append("\n".join(lines))
    return blocks


GUIDE_MCP = """\
### Using MCP tools
`mcpc` maps each MCP server URL to a client. `await mcpc[url].call(tool_name='<name>', **arguments)` returns a
result with `.content` (a list of blocks; text blocks have `.text`), `.structured_content` (a dict or None) and
`.data` (the structured result when the tool declares one). A failing tool raises an exception."""

GUIDE_HTTP = """\
### Calling HTTP APIs
Use the provided `http_client` (an httpx-style async client): `response = await http_client.get(url, params=...)`,
`await http_client.post(url, json=...)`, then `response.raise_for_status()` and `response.json()` / `response.text`.
Build URLs from the base URL and paths documented above."""

GUIDE_AGENTS = """\
### Calling other Gofannon agents
`result = await gofannon_client.call(agent_name='<name>', input_dict={...})` runs that agent and returns its output
dict."""

GUIDE_LLM = """\
### Calling language models
`content, thoughts = await call_llm(provider=..., model=..., messages=[{"role": "system"|"user"|"assistant",
"content": "..."}], parameters={...})` returns the text answer and the model's thoughts (or None). Only use the
models listed above, with the parameters shown. `get_context_window(provider, model)` gives the model's window,
`count_tokens(text)` and `count_message_tokens(messages)` estimate sizes. When the input may not fit the window,
split it into chunks below ~60% of the window, process each chunk, then consolidate the partial results
hierarchically (combine a few results at a time) until one answer remains. Ask for JSON when you need to parse
the answer and `json.loads` it defensively."""

GUIDE_DATA_STORE = """\
### Remembering data between runs
`data_store` is a per-user key/value store: `data_store.get(key, default=None)`, `data_store.set(key, value)`,
`data_store.delete(key)`, `data_store.list_keys(prefix=None)`, `data_store.get_many(keys)`,
`data_store.set_many({...})`, `data_store.use_namespace("name")` for a separate namespace. Values are JSON."""


def task_template(req: GenerateCodeRequest) -> str:
    return f"""\
### Your task
Write ONLY the body of this function:

    async def run(input_dict: dict, tools: dict) -> dict:

The body runs inside a sandbox where these names already exist: `input_dict`, `tools`, `mcpc`, `http_client`,
`call_llm`, `gofannon_client`, `data_store`, `get_context_window`, `count_tokens`, `count_message_tokens`,
`asyncio`, `json`, `re`.

Input schema (the keys of `input_dict`):
{json.dumps(req.input_schema, indent=2)}

Output schema (return a dict with exactly these keys):
{json.dumps(req.output_schema, indent=2)}

Rules: the returned dict's keys must match the output schema exactly. Do not write imports, the function
signature, markdown fences or any commentary: answer with the Python statements of the body only, starting at
column 0. Use `await` for every call documented as async."""


async def build_system_prompt(kernel: "Kernel", ident: "Identity", req: GenerateCodeRequest) -> str:
    from gofannon.tools import connector

    sections: list[str] = []
    tool_docs: list[str] = []
    if req.swagger_specs:
        openapi = connector(kernel, "openapi")
        tool_docs.extend(openapi.tool_doc(spec.name, spec.content) for spec in req.swagger_specs)
    tool_docs.extend(await _mcp_section(kernel, req.tools))
    if tool_docs:
        sections.append("## Tools you can use\n\n" + "\n\n".join(tool_docs))
    agent_docs = await _agent_section(kernel, ident, req.gofannon_agents)
    if agent_docs:
        sections.append("## Gofannon agents you can call\n\n" + "\n\n".join(agent_docs))
    models = req.invokable_models or []
    if models:
        sections.append("## Models you can call\n\n" + "\n\n".join(_model_section(models)))
    guides = []
    if req.tools:
        guides.append(GUIDE_MCP)
    if req.swagger_specs:
        guides.append(GUIDE_HTTP)
    if agent_docs:
        guides.append(GUIDE_AGENTS)
    if models:
        guides.append(GUIDE_LLM)
    guides.append(GUIDE_DATA_STORE)
    sections.append("## How to use them\n\n" + "\n\n".join(guides))
    sections.append(task_template(req))
    return "\n\n".join(sections)


# -- post-processing ------------------------------------------------------------------------------------
_FENCE_OPEN = re.compile(r"^\s*```[\w+-]*[ \t]*\n?")
_FENCE_CLOSE = re.compile(r"\n?```\s*$")


def strip_fences(text: str) -> str:
    text = text.strip("\n")
    fenced = re.search(r"```[\w+-]*[ \t]*\n(.*?)\n?```", text, re.DOTALL)
    if fenced and not text.lstrip().startswith("```"):
        text = fenced.group(1)  # prose around one fenced block: keep the block
    text = _FENCE_OPEN.sub("", text, count=1)
    return _FENCE_CLOSE.sub("", text)


_HEADER_IMPORTS = re.compile(
    r"^(from agent_factory\.remote_mcp_client import RemoteMCPClient|from services\.llm_service import call_llm"
    r"|import httpx)\s*$", re.MULTILINE)


def wrap_body(raw: str) -> str:
    """The full agent module from the model's answer (a body, or a whole module despite the instructions)."""
    text = strip_fences(raw)
    if re.search(r"^async def run\s*\(", text, re.MULTILINE):
        body = _HEADER_IMPORTS.sub("", text).strip("\n")
        return HEADER.split("\n\nasync def run", 1)[0] + "\n\n" + body + "\n"
    body = textwrap.dedent(text).strip("\n") or "pass"
    return HEADER + textwrap.indent(body, " " * 8, lambda line: True) + "\n" + FOOTER


def code_problem(code: str) -> str | None:
    """Why the module is not a usable agent (None when it compiles and defines ``async def run``)."""
    try:
        tree = ast.parse(code)
        compile(tree, "<agent>", "exec")
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except ValueError as exc:
        return f"invalid code: {exc}"
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "run":
            names = [a.arg for a in node.args.args + node.args.kwonlyargs]
            if node.args.kwarg is not None or {"input_dict", "tools"} <= set(names):
                return None
            return "run() must accept the keyword arguments input_dict and tools"
        if isinstance(node, ast.FunctionDef) and node.name == "run":
            return "run must be declared with 'async def'"
    return "the code does not define 'async def run(input_dict, tools)'"


def sanitize_name(raw: Any) -> str:
    name = NAME_PATTERN.sub("_", str(raw or "").strip()).strip("_") or "unnamed_agent_function"
    if name[0].isdigit():
        name = "_" + name
    return name[:64]


def parse_json_object(raw: str) -> dict[str, Any] | None:
    """The JSON object a model answered with, fenced or not, or wrapped in prose; None when there is none."""
    text = strip_fences(raw).strip()
    try:
        data = json.loads(text)
    except ValueError:
        match = re.search(r"\{.*\}", text, re.DOTALL)
        try:
            data = json.loads(match.group(0)) if match else None
        except ValueError:
            data = None
    return data if isinstance(data, dict) else None


def parse_name_doc(raw: str) -> tuple[str, str]:
    data = parse_json_object(raw)
    if data is None:
        return "parsing_error_function", f"Could not parse docstring from LLM response:\n{raw}"
    name = data.get("friendly_name") or data.get("friendlyName")
    doc = data.get("docstring")
    return (sanitize_name(name) if name else "unnamed_agent_function",
            str(doc) if doc else "No docstring generated.")


# -- the service ----------------------------------------------------------------------------------------
def builtin_tool_configs(provider: str, model: str, ids: list[str]) -> list[dict[str, Any]] | None:
    """The catalog ``tool_config``s of a model's built-in tools named by ``ids`` (unknown ids dropped)."""
    from gofannon.llm import catalog

    if not ids:
        return None
    config = catalog.active().model(provider, model) or {}
    wanted = set(ids)
    tools = [t["tool_config"] for t in config.get("built_in_tools") or []
             if t.get("id") in wanted and isinstance(t.get("tool_config"), dict)]
    return tools or None


def _with_json_format(provider: str, parameters: dict[str, Any]) -> dict[str, Any]:
    params = dict(parameters)
    if provider == "openai":
        params["response_format"] = {"type": "json_object"}
    return params


async def _llm(kernel: "Kernel", ident: "Identity", cfg: ProviderConfig, messages: list[dict[str, Any]],
               parameters: dict[str, Any], **kw: Any) -> Any:
    from gofannon.llm.service import call_llm
    from gofannon.services import scopes

    try:
        return await scopes.direct(  # a scoped token: its models (403) and maxSpend hold here too
            kernel, ident, cfg.provider, cfg.model, messages, kw.get("tools"), parameters.get("max_tokens"),
            lambda: call_llm(kernel, ident, cfg.provider, cfg.model, messages, parameters, **kw))
    except GofannonError:
        raise
    except Exception as exc:  # noqa: BLE001 - a provider plugin's surprise is still the provider's failure
        raise UpstreamError(f"The model call to {cfg.provider}/{cfg.model} failed: {type(exc).__name__}: {exc}") from None


def name_messages(req: GenerateCodeRequest) -> list[dict[str, str]]:
    prompt = (
        "Create a Python function name and docstring for an agent.\n\n"
        f"Description of what the agent does:\n{req.description}\n\n"
        f"Input schema:\n{json.dumps(req.input_schema, indent=2)}\n\n"
        f"Output schema:\n{json.dumps(req.output_schema, indent=2)}\n\n"
        'Answer with one JSON object with the keys "friendly_name" (a short snake_case function name) and '
        '"docstring" (a Python docstring describing purpose, inputs and outputs). Answer with the JSON only.'
    )
    return [
        {"role": "system", "content": "You are a helpful assistant that generates Python function names and "
                                      "docstrings in JSON format."},
        {"role": "user", "content": prompt},
    ]


async def generate_code(kernel: "Kernel", ident: "Identity", req: GenerateCodeRequest) -> Generated:
    system = await build_system_prompt(kernel, ident, req)
    cfg = req.composer
    code_messages = [{"role": "system", "content": system}, {"role": "user", "content": req.description}]
    # Unlike the reference (§12.27), the composer's selected built-in tools (e.g. web search) are used.
    composer_tools = builtin_tool_configs(cfg.provider, cfg.model, req.built_in_tools)
    try:
        async with asyncio.TaskGroup() as tg:
            code_task = tg.create_task(_llm(kernel, ident, cfg, code_messages, cfg.parameters, timeout=CODE_TIMEOUT_S,
                                            tools=composer_tools))
            name_task = tg.create_task(_llm(kernel, ident, cfg, name_messages(req),
                                            _with_json_format(cfg.provider, cfg.parameters)))
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    code_result, name_result = code_task.result(), name_task.result()
    code = wrap_body(code_result.content or "")
    problem = code_problem(code)
    thoughts = code_result.thoughts
    if problem is not None:
        repair = code_messages + [
            {"role": "assistant", "content": code_result.content or ""},
            {"role": "user", "content": (
                f"That code cannot be used: {problem}. Answer again with the corrected body of "
                "`async def run(input_dict, tools)` only: Python statements, no imports, no signature, no fences.")},
        ]
        repaired = await _llm(kernel, ident, cfg, repair, cfg.parameters, timeout=CODE_TIMEOUT_S,
                              tools=composer_tools)
        code = wrap_body(repaired.content or "")
        problem = code_problem(code)
        if problem is not None:
            raise UpstreamError(f"The model did not produce usable agent code, even after a repair round: {problem}")
        thoughts = repaired.thoughts if repaired.thoughts is not None else thoughts
    friendly, docstring = parse_name_doc(name_result.content or "")
    return Generated(code=code, friendly_name=friendly, docstring=docstring, thoughts=thoughts)
