"""Demo apps: generate a small web app for deployed agents (§5.2) and keep saved demos (§1.12) per owner.

Differences from the reference (DECISIONS.md, §12.14): demos carry an ``ownerId`` (another user's id answers
404 like an unknown one); PUT replaces the content but keeps ``created_at`` and checks ``_rev`` (a stale one is
409); PUT of an unknown id is 404 rather than an upsert, so ids do not leak. Generation failures caused by the
model's output or the provider answer 502 (or the provider's own 4xx/402), never 500.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from gofannon.errors import (
    Conflict,
    GofannonError,
    NotFound,
    RevisionConflict,
    UpstreamError,
)
from gofannon.models.demo import (
    DEMOS,
    CreateDemoAppRequest,
    GenerateDemoCodeRequest,
    ordered,
)
from gofannon.services.ownership import (
    DELETE, EDIT, OWNER_FIELD, READ, WORKSPACE_FIELD, list_in_workspace, load_for, stamp_workspace,
)
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel


# -- CRUD -----------------------------------------------------------------------------------------------
async def create_demo(kernel: "Kernel", ident: "Identity", req: CreateDemoAppRequest, *,
                      workspace_id: str | None = None) -> dict[str, Any]:
    now = now_iso()
    demo_id = str(uuid.uuid4())
    doc = {**req.document(), "_id": demo_id, "created_at": now, "updated_at": now, OWNER_FIELD: ident.uid}
    stamp_workspace(doc, ident, workspace_id)
    doc["_rev"] = await kernel.store.put(DEMOS, demo_id, doc, rev=None)
    return ordered(doc)


async def list_demos(kernel: "Kernel", ident: "Identity", workspace_id: str | None = None) -> list[dict[str, Any]]:
    """The demos of ``workspace_id`` (the active workspace, already checked; None = the caller's personal)."""
    return [ordered(d) for d in await list_in_workspace(kernel, DEMOS, ident, workspace_id)]


async def get_demo(kernel: "Kernel", ident: "Identity", demo_id: str) -> dict[str, Any]:
    return ordered(await load_for(kernel, ident, DEMOS, demo_id, READ))


async def replace_demo(kernel: "Kernel", ident: "Identity", demo_id: str, req: CreateDemoAppRequest,
                       expected_rev: str | None = None) -> dict[str, Any]:
    """Replace a demo's content; ``created_at`` and the owner stay; a stale ``_rev`` is a 409."""
    current = await load_for(kernel, ident, DEMOS, demo_id, EDIT)
    if expected_rev is not None and expected_rev != current.get("_rev"):
        raise Conflict(f"Demo '{demo_id}' was changed since revision {expected_rev}; reload it and retry")
    doc = {
        **req.document(), "_id": demo_id, "created_at": current.get("created_at") or now_iso(),
        "updated_at": now_iso(), OWNER_FIELD: current.get(OWNER_FIELD, ident.uid),
    }
    if current.get(WORKSPACE_FIELD):
        doc[WORKSPACE_FIELD] = current[WORKSPACE_FIELD]
    try:
        doc["_rev"] = await kernel.store.put(DEMOS, demo_id, doc, rev=current["_rev"])
    except RevisionConflict:
        raise Conflict(f"Demo '{demo_id}' was changed by someone else; reload it and retry") from None
    return ordered(doc)


async def delete_demo(kernel: "Kernel", ident: "Identity", demo_id: str) -> None:
    await load_for(kernel, ident, DEMOS, demo_id, DELETE,
                   not_found=NotFound(f"Document '{demo_id}' not found for deletion."))
    await kernel.store.delete(DEMOS, demo_id)


async def app_demo(kernel: "Kernel", ident: "Identity", demo_id: str) -> dict[str, Any]:
    """The demo to render as a page: its owner only (not even admins), since its script runs with the
    viewer's session on this origin."""
    doc = await kernel.store.get(DEMOS, demo_id)
    if doc is None or doc.get(OWNER_FIELD) != ident.uid:
        raise NotFound(f"Document '{demo_id}' not found in '{DEMOS}'")
    return doc


# -- generation -----------------------------------------------------------------------------------------
def api_docs(req: GenerateDemoCodeRequest) -> str:
    if not req.selected_apis:
        return "No APIs selected."
    blocks = []
    for api in req.selected_apis:
        blocks.append("\n".join([
            f"### `{api.friendly_name}`",
            f"- Endpoint: `POST /rest/{api.friendly_name}` (JSON body = the input object, answer = the output object)",
            f"- Description: {api.description}",
            f"- Input schema: `{json.dumps(api.input_schema)}`",
            f"- Output schema: `{json.dumps(api.output_schema)}`",
        ]))
    return "\n\n".join(blocks)


SYSTEM = "You are a helpful assistant that generates web application code in JSON format."


def user_prompt(req: GenerateDemoCodeRequest) -> str:
    return f"""\
Write a small single-page web application in vanilla HTML, CSS and JavaScript (no frameworks, no external
libraries) that does what the user asks below, using the APIs documented here.

Call an API with:
    const response = await fetch(`${{API_BASE_URL}}/rest/<friendlyName>`, {{
      method: "POST", headers: {{"Content-Type": "application/json"}}, credentials: "include",
      body: JSON.stringify(inputObject)}});
    const output = await response.json();
`API_BASE_URL` is a predefined global constant: do not define it. Show errors to the user.

Answer with a single JSON object with exactly these keys:
- "html": the content of <body> only (no <html>, <head> or <body> tags),
- "css": the style rules (no <style> tag),
- "js": the script (no <script> tag).

## APIs
{api_docs(req)}

## What the user wants
{req.user_prompt}"""


def parse_demo_code(raw: str) -> dict[str, str]:
    from gofannon.services.codegen import parse_json_object

    data = parse_json_object(raw)
    if not isinstance(data, dict):
        raise UpstreamError(
            f"Error generating demo code: Could not parse the code generated by the model. Response:\n{raw[:2000]}")
    return {k: str(data[k]) if isinstance(data.get(k), str) else "" for k in ("html", "css", "js")}


async def generate_demo_code(kernel: "Kernel", ident: "Identity", req: GenerateDemoCodeRequest, *,
                             workspace_id: str | None = None) -> dict[str, Any]:
    from gofannon.llm.service import call_llm
    from gofannon.services import scopes
    from gofannon.services.codegen import builtin_tool_configs

    cfg = req.composer
    params = dict(cfg.parameters)
    if cfg.provider == "openai":
        params["response_format"] = {"type": "json_object"}
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_prompt(req)}]
    tools = builtin_tool_configs(cfg.provider, cfg.model, req.built_in_tools)
    try:
        result = await scopes.direct(  # a scoped token: its models (403) and maxSpend hold here too
            kernel, ident, cfg.provider, cfg.model, messages, tools, params.get("max_tokens"),
            lambda: call_llm(kernel, ident, cfg.provider, cfg.model, messages, params, tools=tools,
                             workspace_id=workspace_id))
    except GofannonError:
        raise
    except Exception as exc:  # noqa: BLE001 - a provider plugin's surprise is the provider's failure
        raise UpstreamError(f"Error generating demo code: {type(exc).__name__}: {exc}") from None
    code = parse_demo_code(result.content or "")
    return {**code, "thoughts": result.thoughts}
